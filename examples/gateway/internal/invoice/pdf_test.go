package invoice

import (
	"bytes"
	"compress/zlib"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func sampleInvoice() Invoice {
	return Invoice{
		Number:    "INV/26-27/000001",
		Date:      time.Date(2026, 5, 2, 10, 30, 0, 0, IST()),
		Supplier:  supplierKA(),
		Customer:  Customer{Name: "Asha Rao", Email: "asha@example.com", GSTIN: gstinMH},
		Items:     []Item{{Description: "Prepaid API credits (account acct_01J)", Amount: dec("500")}},
		Reference: "Razorpay payment pay_IH4NVgf4Dreq1l, order order_IEIaMR65cu6nz3",
	}
}

// checkStructure verifies the PDF skeleton: header, trailer, and that
// startxref and every in-use xref entry point at what they claim to.
func checkStructure(t *testing.T, pdf []byte) {
	t.Helper()
	if !bytes.HasPrefix(pdf, []byte("%PDF-1.")) {
		t.Fatalf("header %q", pdf[:min(len(pdf), 8)])
	}
	if !bytes.HasSuffix(bytes.TrimSpace(pdf), []byte("%%EOF")) {
		t.Fatal("no end-of-file marker")
	}
	m := regexp.MustCompile(`startxref\s+(\d+)\s+%%EOF\s*$`).FindSubmatch(pdf)
	if m == nil {
		t.Fatal("no startxref")
	}
	off, _ := strconv.Atoi(string(m[1]))
	if off >= len(pdf) || !bytes.HasPrefix(pdf[off:], []byte("xref")) {
		t.Fatalf("startxref %d does not point at xref", off)
	}
	entries := regexp.MustCompile(`(\d{10}) (\d{5}) n`).FindAllSubmatch(pdf[off:], -1)
	if len(entries) < 5 {
		t.Fatalf("%d xref entries", len(entries))
	}
	for i, e := range entries {
		o, _ := strconv.Atoi(string(e[1]))
		if want := fmt.Sprintf("%d 0 obj", i+1); o >= len(pdf) || !bytes.HasPrefix(pdf[o:], []byte(want)) {
			t.Fatalf("xref entry %d -> %d, not %q", i+1, o, want)
		}
	}
}

// text returns the PDF's page content, inflating compressed streams.
func text(t *testing.T, pdf []byte) string {
	t.Helper()
	var out strings.Builder
	out.Write(pdf)
	re := regexp.MustCompile(`(?s)/Filter /FlateDecode /Length (\d+)>>\nstream\n`)
	for _, loc := range re.FindAllSubmatchIndex(pdf, -1) {
		n, _ := strconv.Atoi(string(pdf[loc[2]:loc[3]]))
		zr, err := zlib.NewReader(bytes.NewReader(pdf[loc[1] : loc[1]+n]))
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		out.Write(b)
	}
	return out.String()
}

func TestRender(t *testing.T) {
	inv := sampleInvoice()
	for _, uncompressed := range []bool{true, false} {
		t.Run(fmt.Sprint("uncompressed=", uncompressed), func(t *testing.T) {
			pdf, err := Render(inv, &RenderOptions{Uncompressed: uncompressed})
			if err != nil {
				t.Fatal(err)
			}
			checkStructure(t, pdf)
			raw := string(pdf)
			if uncompressed != strings.Contains(raw, "(INV/26-27/000001)") {
				t.Errorf("number searchable in raw bytes = %v", !uncompressed)
			}
			all := text(t, pdf)
			for _, want := range []string{
				"(TAX INVOICE)", "(INV/26-27/000001)", "(02 May 2026)", "(2026-27)",
				"(Forii AI Private Limited)", "(GSTIN: " + gstinKA + ")", "(GSTIN: " + gstinMH + ")",
				"(Place of Supply)", `(Maharashtra \(27\))`, `(State: Karnataka \(29\))`, "(Reverse Charge)", "(No)",
				"(Prepaid API credits \\(account acct_01J\\))", "(998315)",
				"(Total Taxable Value)", "(500.00)", "(IGST @ 18%)", "(90.00)", "(Invoice Total \\(INR\\))", "(590.00)",
				"(Amount in words: Rupees Five Hundred Ninety Only)", "pay_IH4NVgf4Dreq1l", "(Authorised Signatory)",
			} {
				if !strings.Contains(all, want) {
					t.Errorf("PDF lacks %s", want)
				}
			}
			if strings.Contains(all, "CGST") {
				t.Error("inter-state invoice shows CGST")
			}
		})
	}
}

func TestRenderIntraStateAndDeterminism(t *testing.T) {
	inv := sampleInvoice()
	inv.Customer = Customer{Name: "Ravi", Email: "ravi@example.com", Address: "4 Residency Road\nBengaluru"}
	inv.Date = time.Date(2027, 3, 31, 18, 29, 0, 0, time.UTC) // 23:59 IST
	a, err := Render(inv, &RenderOptions{Uncompressed: true})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Render(inv, &RenderOptions{Uncompressed: true})
	if !bytes.Equal(a, b) {
		t.Fatal("rendering is not deterministic")
	}
	s := string(a)
	for _, want := range []string{"(CGST @ 9%)", "(SGST @ 9%)", "(45.00)", "(31 Mar 2027)", "(2026-27)", "(GSTIN: Unregistered)", "(4 Residency Road)", "(Bengaluru)", "D:20270331182900"} {
		if !strings.Contains(s, want) {
			t.Errorf("PDF lacks %s", want)
		}
	}
	if strings.Contains(s, "IGST") {
		t.Error("intra-state invoice shows IGST")
	}
	compressed, _ := Render(inv, nil)
	if len(compressed) >= len(a) {
		t.Errorf("compressed %d >= uncompressed %d bytes", len(compressed), len(a))
	}
}

func TestRenderTextHandling(t *testing.T) {
	inv := sampleInvoice()
	inv.Customer.Name = "José राम"
	inv.Items = nil
	for i := range 40 {
		inv.Items = append(inv.Items, Item{Description: strings.Repeat("long description ", 12) + strings.Repeat("x", 120), SAC: "998599", Amount: dec(fmt.Sprint(i + 1))})
	}
	pdf, err := Render(inv, &RenderOptions{Uncompressed: true})
	if err != nil {
		t.Fatal(err)
	}
	checkStructure(t, pdf)
	s := string(pdf)
	if !strings.Contains(s, "(Jos\xe9 ???)") {
		t.Error("name not translated to Windows-1252 with ? for unsupported runes")
	}
	pages := strings.Count(s, "/Type /Page\n")
	if pages < 3 || !strings.Contains(s, fmt.Sprintf("(INV/26-27/000001 - page %d of %d)", pages, pages)) {
		t.Errorf("%d pages for 40 long items, or no page footer", pages)
	}
	if !strings.Contains(s, "(998599)") || !strings.Contains(s, "(820.00)") { // 1+…+40
		t.Error("items or total missing")
	}
}

func TestRenderErrors(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Invoice)
		err    error
	}{
		{"number too long", func(i *Invoice) { i.Number = "INV/2026-27/000001" }, ErrInvalidNumber},
		{"number chars", func(i *Invoice) { i.Number = "INV 1" }, ErrInvalidNumber},
		{"no date", func(i *Invoice) { i.Date = time.Time{} }, ErrInvalidDate},
		{"reference lines", func(i *Invoice) { i.Reference = "a\nb" }, ErrInvalidParty},
		{"compute error", func(i *Invoice) { i.Items = nil }, ErrNoItems},
	}
	for _, tt := range tests {
		inv := sampleInvoice()
		tt.mutate(&inv)
		if _, err := Render(inv, nil); !errors.Is(err, tt.err) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.err)
		}
	}
}

func TestRenderConcurrent(t *testing.T) {
	want, err := Render(sampleInvoice(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 5 {
				got, err := Render(sampleInvoice(), nil)
				if err != nil || !bytes.Equal(got, want) {
					t.Errorf("concurrent render differs: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func BenchmarkRender(b *testing.B) {
	inv := sampleInvoice()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Render(inv, nil); err != nil {
			b.Fatal(err)
		}
	}
}
