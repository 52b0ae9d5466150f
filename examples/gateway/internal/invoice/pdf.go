package invoice

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/go-pdf/fpdf"
)

// RenderOptions tunes Render; nil means defaults.
type RenderOptions struct {
	// Uncompressed leaves page content streams uncompressed, so the text
	// is searchable in the raw bytes (tests, debugging). Default false.
	Uncompressed bool
}

// Page geometry in millimetres (A4 portrait).
const (
	pageH      = 297.0
	margin     = 15.0
	bottom     = 20.0
	contentW   = 210.0 - 2*margin
	lineH      = 5.0
	colNo      = 10.0
	colDesc    = 100.0
	colSAC     = 25.0
	colAmount  = contentW - colNo - colDesc - colSAC
	metaLabelW = 32.0
	metaX      = margin + 100.0
)

// Render validates inv (number, date, parties, items), computes its tax
// and returns the tax invoice as PDF bytes. Text is set in the PDF core
// fonts (Helvetica, Windows-1252): characters outside that code page print
// as "?", and amounts are labelled INR because the rupee sign is not in it.
// The output depends only on inv and opts: the PDF's dates are inv.Date.
func Render(inv Invoice, opts *RenderOptions) ([]byte, error) {
	if err := ValidateNumber(inv.Number); err != nil {
		return nil, err
	}
	if inv.Date.IsZero() || inv.Date.Year() < 2000 || inv.Date.Year() > 9999 {
		return nil, fmt.Errorf("%w: %v", ErrInvalidDate, inv.Date)
	}
	if err := checkName("reference", inv.Reference, false); err != nil {
		return nil, err
	}
	t, err := Compute(inv)
	if err != nil {
		return nil, err
	}
	var o RenderOptions
	if opts != nil {
		o = *opts
	}

	date := inv.Date.In(IST())
	pdf := fpdf.New("P", "mm", "A4", "")
	pdf.SetCompression(!o.Uncompressed)
	pdf.SetCatalogSort(true) // fpdf iterates maps; sorting makes the bytes reproducible
	// fpdf writes D:YYYYMMDDHHmmSS without a zone, which readers take as UTC.
	pdf.SetCreationDate(inv.Date.UTC())
	pdf.SetModificationDate(inv.Date.UTC())
	pdf.SetTitle("Tax Invoice "+inv.Number, true)
	pdf.SetAuthor(inv.Supplier.Name, true)
	pdf.SetCreator("keyledger gateway", false)
	pdf.SetMargins(margin, margin, margin)
	pdf.SetAutoPageBreak(true, bottom)
	r := &renderer{pdf: pdf, tr: cp1252(pdf.UnicodeTranslatorFromDescriptor(""))}
	pdf.AliasNbPages("{nb}")
	pdf.SetFooterFunc(func() {
		pdf.SetY(-12)
		pdf.SetFont("Helvetica", "", 8)
		pdf.CellFormat(contentW, 4, fmt.Sprintf("%s - page %d of {nb}", inv.Number, pdf.PageNo()), "", 0, "C", false, 0, "")
	})
	pdf.AddPage()

	// Title.
	pdf.SetFont("Helvetica", "B", 16)
	pdf.CellFormat(contentW, 10, "TAX INVOICE", "", 1, "C", false, 0, "")
	pdf.SetLineWidth(0.3)
	pdf.Line(margin, pdf.GetY(), margin+contentW, pdf.GetY())
	top := pdf.GetY() + 3

	// Supplier, left column.
	s := inv.Supplier
	pdf.SetXY(margin, top)
	pdf.SetFont("Helvetica", "B", 11)
	r.lines(margin, 95, 6, s.Name)
	pdf.SetFont("Helvetica", "", 9)
	r.lines(margin, 95, lineH, s.Address)
	r.lines(margin, 95, lineH, "GSTIN: "+s.GSTIN)
	r.lines(margin, 95, lineH, "State: "+stateLabel(t.SupplierState))
	if s.Email != "" {
		r.lines(margin, 95, lineH, "Email: "+s.Email)
	}
	leftY := pdf.GetY()

	// Invoice details, right column.
	pdf.SetXY(metaX, top)
	posLabel := stateLabel(t.PlaceOfSupply)
	for _, kv := range [][2]string{
		{"Invoice No.", inv.Number},
		{"Invoice Date", date.Format("02 Jan 2006")},
		{"Financial Year", FinancialYearOf(inv.Date).String()},
		{"Place of Supply", posLabel},
		{"Reverse Charge", "No"},
	} {
		pdf.SetFont("Helvetica", "B", 9)
		pdf.SetX(metaX)
		pdf.CellFormat(metaLabelW, lineH, kv[0], "", 0, "L", false, 0, "")
		pdf.SetFont("Helvetica", "", 9)
		r.lines(metaX+metaLabelW, contentW-100-metaLabelW, lineH, kv[1])
	}
	pdf.SetY(max(leftY, pdf.GetY()) + 4)

	// Customer.
	c := inv.Customer
	pdf.SetFont("Helvetica", "B", 10)
	pdf.CellFormat(contentW, 6, "Bill To", "", 1, "L", false, 0, "")
	pdf.SetFont("Helvetica", "B", 9)
	r.lines(margin, contentW, lineH, c.Name)
	pdf.SetFont("Helvetica", "", 9)
	if c.Email != "" {
		r.lines(margin, contentW, lineH, "Email: "+c.Email)
	}
	if c.Address != "" {
		r.lines(margin, contentW, lineH, c.Address)
	}
	if c.GSTIN != "" {
		r.lines(margin, contentW, lineH, "GSTIN: "+c.GSTIN)
	} else {
		r.lines(margin, contentW, lineH, "GSTIN: Unregistered")
	}
	if c.GSTIN != "" || c.StateCode != "" {
		r.lines(margin, contentW, lineH, "State: "+posLabel)
	}
	pdf.Ln(4)

	// Line items.
	r.tableHeader()
	pdf.SetFont("Helvetica", "", 9)
	for i, l := range t.Lines {
		desc := r.wrap(l.Description, colDesc-2)
		h := float64(len(desc))*lineH + 2
		if pdf.GetY()+h > pageH-bottom {
			pdf.AddPage()
			r.tableHeader()
			pdf.SetFont("Helvetica", "", 9)
		}
		x, y := margin, pdf.GetY()
		pdf.Rect(x, y, colNo, h, "D")
		pdf.Rect(x+colNo, y, colDesc, h, "D")
		pdf.Rect(x+colNo+colDesc, y, colSAC, h, "D")
		pdf.Rect(x+colNo+colDesc+colSAC, y, colAmount, h, "D")
		pdf.SetXY(x, y+1)
		pdf.CellFormat(colNo, lineH, fmt.Sprint(i+1), "", 0, "C", false, 0, "")
		for j, line := range desc {
			pdf.SetXY(x+colNo, y+1+float64(j)*lineH)
			pdf.CellFormat(colDesc, lineH, line, "", 0, "L", false, 0, "")
		}
		pdf.SetXY(x+colNo+colDesc, y+1)
		pdf.CellFormat(colSAC, lineH, l.SAC, "", 0, "C", false, 0, "")
		pdf.CellFormat(colAmount, lineH, FormatINR(l.Taxable), "", 0, "R", false, 0, "")
		pdf.SetXY(x, y+h)
	}

	// Totals.
	rows := [][2]string{{"Total Taxable Value", FormatINR(t.Taxable)}}
	for _, x := range t.Taxes {
		rows = append(rows, [2]string{fmt.Sprintf("%s @ %s%%", x.Name, x.RatePercent), FormatINR(x.Amount)})
	}
	rows = append(rows, [2]string{"Total Tax", FormatINR(t.Tax)})
	labelW := contentW - colAmount
	for _, row := range rows {
		pdf.SetFont("Helvetica", "", 9)
		pdf.CellFormat(labelW, 6, row[0], "LRB", 0, "R", false, 0, "")
		pdf.CellFormat(colAmount, 6, row[1], "RB", 1, "R", false, 0, "")
	}
	pdf.SetFont("Helvetica", "B", 10)
	pdf.CellFormat(labelW, 7, "Invoice Total (INR)", "LRB", 0, "R", false, 0, "")
	pdf.CellFormat(colAmount, 7, FormatINR(t.Total), "RB", 1, "R", false, 0, "")
	pdf.Ln(3)
	pdf.SetFont("Helvetica", "", 9)
	r.lines(margin, contentW, lineH, "Amount in words: "+AmountInWords(t.Total))
	if inv.TaxInclusive {
		r.lines(margin, contentW, lineH, "Amounts paid include GST; taxable values are derived at 100/118 of each line.")
	}
	if inv.Reference != "" {
		r.lines(margin, contentW, lineH, "Reference: "+inv.Reference)
	}
	pdf.Ln(8)
	r.lines(margin, contentW, lineH, "For "+s.Name)
	pdf.Ln(6)
	r.lines(margin, contentW, lineH, "Authorised Signatory")
	pdf.Ln(4)
	pdf.SetFont("Helvetica", "I", 8)
	r.lines(margin, contentW, 4, "This is a computer-generated invoice and does not require a physical signature.")

	var buf bytes.Buffer
	if err := pdf.Output(&buf); err != nil {
		return nil, fmt.Errorf("invoice: render PDF: %w", err)
	}
	return buf.Bytes(), nil
}

func stateLabel(code string) string {
	name, _ := StateName(code)
	return name + " (" + code + ")"
}

type renderer struct {
	pdf *fpdf.Fpdf
	tr  func(string) string
}

func (r *renderer) tableHeader() {
	pdf := r.pdf
	pdf.SetFont("Helvetica", "B", 9)
	pdf.SetFillColor(230, 230, 230)
	pdf.CellFormat(colNo, 7, "#", "1", 0, "C", true, 0, "")
	pdf.CellFormat(colDesc, 7, "Description of Service", "1", 0, "L", true, 0, "")
	pdf.CellFormat(colSAC, 7, "SAC", "1", 0, "C", true, 0, "")
	pdf.CellFormat(colAmount, 7, "Taxable Value (INR)", "1", 1, "R", true, 0, "")
}

// lines writes text (which may hold line breaks) wrapped to width w at x,
// one cell per line, moving down.
func (r *renderer) lines(x, w, h float64, text string) {
	for _, l := range r.wrap(text, w) {
		r.pdf.SetX(x)
		r.pdf.CellFormat(w, h, l, "", 1, "L", false, 0, "")
	}
}

// wrap translates text to the core fonts' code page and splits it into
// lines no wider than w at spaces (or anywhere, for a word wider than w).
func (r *renderer) wrap(text string, w float64) []string {
	var out []string
	for _, para := range strings.Split(strings.ReplaceAll(text, "\r\n", "\n"), "\n") {
		para = r.tr(strings.TrimSpace(para))
		line := ""
		for _, word := range strings.Fields(para) {
			cand := word
			if line != "" {
				cand = line + " " + word
			}
			if r.pdf.GetStringWidth(cand) <= w-2 {
				line = cand
				continue
			}
			if line != "" {
				out = append(out, line)
			}
			for r.pdf.GetStringWidth(word) > w-2 && len(word) > 1 {
				n := len(word) - 1
				for n > 1 && r.pdf.GetStringWidth(word[:n]) > w-2 {
					n--
				}
				out = append(out, word[:n])
				word = word[n:]
			}
			line = word
		}
		if line != "" {
			out = append(out, line)
		}
	}
	if len(out) == 0 {
		out = []string{""}
	}
	return out
}

// cp1252 wraps fpdf's UTF-8 to Windows-1252 translator: control characters
// become spaces and runes outside the code page become "?" (fpdf would print
// "."). The result is a byte string in the code page, not UTF-8.
func cp1252(tr func(string) string) func(string) string {
	return func(s string) string {
		var b strings.Builder
		for _, c := range s {
			switch {
			case c < 0x20 || c == 0x7f:
				b.WriteByte(' ')
			case c < 0x80:
				b.WriteRune(c)
			default:
				if t := tr(string(c)); len(t) == 1 && t != "." {
					b.WriteString(t)
				} else {
					b.WriteByte('?')
				}
			}
		}
		return b.String()
	}
}
