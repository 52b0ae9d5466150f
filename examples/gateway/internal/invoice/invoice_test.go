package invoice

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"
)

// Real GSTINs with valid check characters, from public documents.
const (
	gstinKA = "29AAGCG6253J1Z8" // Karnataka
	gstinMH = "27AAPFU0939F1ZV" // Maharashtra
)

func dec(s string) decimal.Decimal { return decimal.RequireFromString(s) }

func supplierKA() Supplier {
	return Supplier{Name: "Forii AI Private Limited", Address: "12 MG Road\nBengaluru 560001", GSTIN: gstinKA, Email: "billing@forii.example"}
}

func TestCompute(t *testing.T) {
	type tax struct{ name, amount string }
	tests := []struct {
		name      string
		customer  Customer
		supplier  *Supplier
		amounts   []string
		inclusive bool
		taxable   string
		taxes     []tax
		total     string
		inter     bool
	}{
		{name: "intra 500", customer: Customer{Name: "Asha"}, amounts: []string{"500"}, taxable: "500", taxes: []tax{{CGST, "45"}, {SGST, "45"}}, total: "590"},
		{name: "inter 500 by state", customer: Customer{Name: "Asha", StateCode: "27"}, amounts: []string{"500"}, taxable: "500", taxes: []tax{{IGST, "90"}}, total: "590", inter: true},
		{name: "inter by GSTIN", customer: Customer{Name: "Acme", GSTIN: gstinMH}, amounts: []string{"500"}, taxable: "500", taxes: []tax{{IGST, "90"}}, total: "590", inter: true},
		{name: "intra by GSTIN and state", customer: Customer{Name: "Acme", GSTIN: gstinKA, StateCode: "29"}, amounts: []string{"1"}, taxable: "1", taxes: []tax{{CGST, "0.09"}, {SGST, "0.09"}}, total: "1.18"},
		{name: "half-up exactly at .5: 9% of 0.50 = 0.045", customer: Customer{Name: "A"}, amounts: []string{"0.50"}, taxable: "0.50", taxes: []tax{{CGST, "0.05"}, {SGST, "0.05"}}, total: "0.60"},
		{name: "18% of 0.25 = 0.045 rounds up", customer: Customer{Name: "A", StateCode: "07"}, amounts: []string{"0.25"}, taxable: "0.25", taxes: []tax{{IGST, "0.05"}}, total: "0.30", inter: true},
		{name: "9% of 0.25 = 0.0225 rounds down", customer: Customer{Name: "A"}, amounts: []string{"0.25"}, taxable: "0.25", taxes: []tax{{CGST, "0.02"}, {SGST, "0.02"}}, total: "0.29"},
		{name: "intra and inter differ by a paisa", customer: Customer{Name: "A"}, amounts: []string{"0.05"}, taxable: "0.05", taxes: []tax{{CGST, "0"}, {SGST, "0"}}, total: "0.05"},
		{name: "same amount inter", customer: Customer{Name: "A", StateCode: "33"}, amounts: []string{"0.05"}, taxable: "0.05", taxes: []tax{{IGST, "0.01"}}, total: "0.06", inter: true},
		{name: "tax on the total, not per line", customer: Customer{Name: "A"}, amounts: []string{"0.05", "0.05", "0.05"}, taxable: "0.15", taxes: []tax{{CGST, "0.01"}, {SGST, "0.01"}}, total: "0.17"},
		{name: "large", customer: Customer{Name: "A"}, amounts: []string{"12345678.99"}, taxable: "12345678.99", taxes: []tax{{CGST, "1111111.11"}, {SGST, "1111111.11"}}, total: "14567901.21"},
		{name: "union territory UTGST", supplier: &Supplier{Name: "S", Address: "Chandigarh", GSTIN: "04AAGCG6253J1Z" + string(gstinCheck("04AAGCG6253J1Z"))},
			customer: Customer{Name: "A"}, amounts: []string{"100"}, taxable: "100", taxes: []tax{{CGST, "9"}, {UTGST, "9"}}, total: "118"},
		{name: "inclusive intra 590", customer: Customer{Name: "A"}, amounts: []string{"590"}, inclusive: true, taxable: "500", taxes: []tax{{CGST, "45"}, {SGST, "45"}}, total: "590"},
		{name: "inclusive inter 100", customer: Customer{Name: "A", StateCode: "27"}, amounts: []string{"100"}, inclusive: true, taxable: "84.75", taxes: []tax{{IGST, "15.25"}}, total: "100", inter: true},
		{name: "inclusive intra odd paisa", customer: Customer{Name: "A"}, amounts: []string{"100"}, inclusive: true, taxable: "84.75", taxes: []tax{{CGST, "7.63"}, {SGST, "7.62"}}, total: "100"},
		{name: "inclusive per line", customer: Customer{Name: "A"}, amounts: []string{"1", "1"}, inclusive: true, taxable: "1.70", taxes: []tax{{CGST, "0.15"}, {SGST, "0.15"}}, total: "2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inv := Invoice{Supplier: supplierKA(), Customer: tt.customer, TaxInclusive: tt.inclusive}
			if tt.supplier != nil {
				inv.Supplier = *tt.supplier
			}
			for _, a := range tt.amounts {
				inv.Items = append(inv.Items, Item{Description: "Prepaid API credits", Amount: dec(a)})
			}
			got, err := Compute(inv)
			if err != nil {
				t.Fatal(err)
			}
			if !got.Taxable.Equal(dec(tt.taxable)) || !got.Total.Equal(dec(tt.total)) || got.InterState != tt.inter {
				t.Errorf("taxable %s total %s inter %v, want %s %s %v", got.Taxable, got.Total, got.InterState, tt.taxable, tt.total, tt.inter)
			}
			if len(got.Taxes) != len(tt.taxes) {
				t.Fatalf("taxes %+v", got.Taxes)
			}
			sum := decimal.Zero
			for i, x := range tt.taxes {
				if got.Taxes[i].Name != x.name || !got.Taxes[i].Amount.Equal(dec(x.amount)) {
					t.Errorf("tax %d = %s %s, want %s %s", i, got.Taxes[i].Name, got.Taxes[i].Amount, x.name, x.amount)
				}
				sum = sum.Add(got.Taxes[i].Amount)
			}
			if !got.Tax.Equal(sum) || !got.Total.Equal(got.Taxable.Add(got.Tax)) {
				t.Errorf("tax %s, lines %s", got.Tax, sum)
			}
			if got.Lines[0].SAC != SACITInfrastructure {
				t.Errorf("default SAC %q", got.Lines[0].SAC)
			}
		})
	}
}

func TestComputeErrors(t *testing.T) {
	item := []Item{{Description: "credits", Amount: dec("10")}}
	tests := []struct {
		name string
		inv  Invoice
		err  error
	}{
		{"supplier GSTIN", Invoice{Supplier: Supplier{Name: "S", Address: "A", GSTIN: "29AAGCG6253J1Z9"}, Customer: Customer{Name: "C"}, Items: item}, ErrInvalidGSTIN},
		{"supplier state mismatch", Invoice{Supplier: Supplier{Name: "S", Address: "A", GSTIN: gstinKA, StateCode: "27"}, Customer: Customer{Name: "C"}, Items: item}, ErrStateMismatch},
		{"supplier name", Invoice{Supplier: Supplier{Name: " ", Address: "A", GSTIN: gstinKA}, Customer: Customer{Name: "C"}, Items: item}, ErrInvalidParty},
		{"supplier address", Invoice{Supplier: Supplier{Name: "S", GSTIN: gstinKA}, Customer: Customer{Name: "C"}, Items: item}, ErrInvalidParty},
		{"customer name", Invoice{Supplier: supplierKA(), Items: item}, ErrInvalidParty},
		{"customer name two lines", Invoice{Supplier: supplierKA(), Customer: Customer{Name: "A\nB"}, Items: item}, ErrInvalidParty},
		{"customer name not UTF-8", Invoice{Supplier: supplierKA(), Customer: Customer{Name: "\xff"}, Items: item}, ErrInvalidParty},
		{"customer name too long", Invoice{Supplier: supplierKA(), Customer: Customer{Name: strings.Repeat("n", 201)}, Items: item}, ErrInvalidParty},
		{"customer state", Invoice{Supplier: supplierKA(), Customer: Customer{Name: "C", StateCode: "99"}, Items: item}, ErrInvalidStateCode},
		{"customer GSTIN", Invoice{Supplier: supplierKA(), Customer: Customer{Name: "C", GSTIN: "27AAPFU0939F1ZW"}, Items: item}, ErrInvalidGSTIN},
		{"customer state vs GSTIN", Invoice{Supplier: supplierKA(), Customer: Customer{Name: "C", GSTIN: gstinMH, StateCode: "29"}, Items: item}, ErrStateMismatch},
		{"no items", Invoice{Supplier: supplierKA(), Customer: Customer{Name: "C"}}, ErrNoItems},
		{"too many items", Invoice{Supplier: supplierKA(), Customer: Customer{Name: "C"}, Items: make([]Item, 101)}, ErrTooManyItems},
		{"empty description", Invoice{Supplier: supplierKA(), Customer: Customer{Name: "C"}, Items: []Item{{Amount: dec("1")}}}, ErrInvalidItem},
		{"bad SAC", Invoice{Supplier: supplierKA(), Customer: Customer{Name: "C"}, Items: []Item{{Description: "x", SAC: "1234", Amount: dec("1")}}}, ErrInvalidSAC},
		{"HSN not SAC", Invoice{Supplier: supplierKA(), Customer: Customer{Name: "C"}, Items: []Item{{Description: "x", SAC: "847130", Amount: dec("1")}}}, ErrInvalidSAC},
		{"zero amount", Invoice{Supplier: supplierKA(), Customer: Customer{Name: "C"}, Items: []Item{{Description: "x", Amount: dec("0")}}}, ErrInvalidAmount},
		{"negative amount", Invoice{Supplier: supplierKA(), Customer: Customer{Name: "C"}, Items: []Item{{Description: "x", Amount: dec("-5")}}}, ErrInvalidAmount},
		{"fractional paise", Invoice{Supplier: supplierKA(), Customer: Customer{Name: "C"}, Items: []Item{{Description: "x", Amount: dec("1.005")}}}, ErrInvalidAmount},
		{"huge amount", Invoice{Supplier: supplierKA(), Customer: Customer{Name: "C"}, Items: []Item{{Description: "x", Amount: dec("1e16")}}}, ErrInvalidAmount},
		{"hostile exponent", Invoice{Supplier: supplierKA(), Customer: Customer{Name: "C"}, Items: []Item{{Description: "x", Amount: dec("1e9000")}}}, ErrInvalidAmount},
	}
	for _, tt := range tests {
		if _, err := Compute(tt.inv); !errors.Is(err, tt.err) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.err)
		}
	}
}

// FuzzCompute checks the tax invariants for any amounts in paise.
func FuzzCompute(f *testing.F) {
	f.Add(int64(50000), int64(1), false, false)
	f.Add(int64(5), int64(5), true, false)
	f.Add(int64(10000), int64(33), false, true)
	f.Fuzz(func(t *testing.T, a, b int64, inter, inclusive bool) {
		if a <= 0 || b <= 0 || a > 1e15 || b > 1e15 {
			return
		}
		c := Customer{Name: "C"}
		if inter {
			c.StateCode = "27"
		}
		inv := Invoice{Supplier: supplierKA(), Customer: c, TaxInclusive: inclusive,
			Items: []Item{{Description: "a", Amount: decimal.New(a, -2)}, {Description: "b", Amount: decimal.New(b, -2)}}}
		got, err := Compute(inv)
		if err != nil {
			t.Fatal(err)
		}
		gross := decimal.New(a+b, -2)
		sum := decimal.Zero
		for _, x := range got.Taxes {
			if x.Amount.IsNegative() || x.Amount.Exponent() < -2 && !x.Amount.Equal(x.Amount.Round(2)) {
				t.Fatalf("tax line %+v", x)
			}
			sum = sum.Add(x.Amount)
		}
		if !sum.Equal(got.Tax) || !got.Total.Equal(got.Taxable.Add(got.Tax)) || got.InterState != inter {
			t.Fatalf("inconsistent %+v", got)
		}
		if inclusive && !got.Total.Equal(gross) {
			t.Fatalf("inclusive total %s != paid %s", got.Total, gross)
		}
		if !inclusive && !got.Taxable.Equal(gross) {
			t.Fatalf("exclusive taxable %s != %s", got.Taxable, gross)
		}
		if !inclusive && !inter && !got.Taxes[0].Amount.Equal(got.Taxes[1].Amount) {
			t.Fatalf("CGST != SGST: %+v", got.Taxes)
		}
		// Tax is 18% of the taxable value to within a paisa per head and line.
		diff := got.Tax.Sub(got.Taxable.Mul(dec("0.18"))).Abs()
		if diff.GreaterThan(dec("0.03")) {
			t.Fatalf("tax %s off 18%% of %s by %s", got.Tax, got.Taxable, diff)
		}
	})
}

func TestGSTIN(t *testing.T) {
	for _, g := range []string{gstinKA, gstinMH, "07AAACI1681G1Z" + string(gstinCheck("07AAACI1681G1Z"))} {
		if err := ValidateGSTIN(g); err != nil {
			t.Errorf("%s: %v", g, err)
		}
	}
	for _, g := range []string{"", "29AAGCG6253J1Z", "29AAGCG6253J1Z88", "29AAGCG6253J1Z9", "29aagcg6253j1z8", "99AAGCG6253J1Z8",
		"2AAAGCG6253J1Z8", "29AAGC06253J1Z8", "29AAGCG62X3J1Z8", "29AAGCG62531JZ8", "29AAGCG6253J0Z8", "29AAGCG6253J1Y8", "29AAGCG6253J1Z-"} {
		if err := ValidateGSTIN(g); !errors.Is(err, ErrInvalidGSTIN) {
			t.Errorf("%q accepted", g)
		}
	}
	if n, ok := StateName("29"); !ok || n != "Karnataka" {
		t.Error(n)
	}
	if _, ok := StateName("25"); ok {
		t.Error("25 (merged into 26 in 2020) accepted")
	}
}

func FuzzValidateGSTIN(f *testing.F) {
	f.Add(gstinKA)
	f.Add(gstinMH)
	f.Fuzz(func(t *testing.T, g string) {
		if ValidateGSTIN(g) != nil {
			return
		}
		if len(g) != 15 || gstinCheck(g[:14]) != g[14] {
			t.Fatalf("accepted %q", g)
		}
		// A single changed character is always detected.
		for i := 0; i < 15; i++ {
			for _, c := range []byte("0A") {
				if g[i] == c {
					continue
				}
				m := g[:i] + string(c) + g[i+1:]
				if ValidateGSTIN(m) == nil && i >= 2 {
					t.Fatalf("%q and %q both valid", g, m)
				}
			}
		}
	})
}

func TestFinancialYear(t *testing.T) {
	ist := IST()
	tests := []struct {
		t    time.Time
		want FinancialYear
	}{
		{time.Date(2026, 4, 1, 0, 0, 0, 0, ist), 2026},
		{time.Date(2026, 3, 31, 23, 59, 59, 0, ist), 2025},
		{time.Date(2027, 3, 31, 18, 29, 59, 0, time.UTC), 2026}, // 23:59:59 IST
		{time.Date(2027, 3, 31, 18, 30, 0, 0, time.UTC), 2027},  // 00:00 IST on 1 April
		{time.Date(2027, 1, 15, 12, 0, 0, 0, time.UTC), 2026},
		{time.Date(2026, 12, 31, 20, 0, 0, 0, time.UTC), 2026},
	}
	for _, tt := range tests {
		if got := FinancialYearOf(tt.t); got != tt.want {
			t.Errorf("FinancialYearOf(%v) = %d, want %d", tt.t, got, tt.want)
		}
	}
	fy := FinancialYear(2026)
	if fy.String() != "2026-27" || fy.Short() != "26-27" || FinancialYear(2099).String() != "2099-00" || FinancialYear(2009).Short() != "09-10" {
		t.Error(fy.String(), fy.Short())
	}
	if !fy.Start().Equal(time.Date(2026, 3, 31, 18, 30, 0, 0, time.UTC)) || !fy.End().Equal(FinancialYear(2027).Start()) {
		t.Error(fy.Start(), fy.End())
	}
	if FinancialYearOf(fy.End().Add(-time.Nanosecond)) != fy || FinancialYearOf(fy.End()) != fy+1 {
		t.Error("boundary")
	}
}

func TestNumberer(t *testing.T) {
	n := DefaultNumberer()
	tests := []struct {
		fy   FinancialYear
		seq  int64
		want string
		err  error
	}{
		{2026, 1, "INV/26-27/000001", nil},
		{2026, 999999, "INV/26-27/999999", nil},
		{2099, 1, "", ErrInvalidNumber},
		{2026, 1000000, "", ErrSequenceExhausted},
		{2026, 0, "", ErrInvalidNumber},
		{1999, 1, "", ErrInvalidNumber},
		{2098, 42, "INV/98-99/000042", nil},
	}
	for _, tt := range tests {
		got, err := n.Format(tt.fy, tt.seq)
		if got != tt.want || !errors.Is(err, tt.err) {
			t.Errorf("Format(%d, %d) = %q, %v", tt.fy, tt.seq, got, err)
		}
		if err != nil {
			continue
		}
		if len(got) > 16 || ValidateNumber(got) != nil {
			t.Errorf("%q breaks Rule 46(b)", got)
		}
		fy, seq, err := n.Parse(got)
		if fy != tt.fy || seq != tt.seq || err != nil {
			t.Errorf("Parse(%q) = %d %d %v", got, fy, seq, err)
		}
	}
	if got, _ := (Numberer{}).Format(2026, 7); got != "INV/26-27/000007" {
		t.Errorf("zero Numberer: %q", got)
	}
	custom, err := NewNumberer("FRI", 5)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := custom.Format(2030, 12); got != "FRI/30-31/00012" || custom.Max() != 99999 {
		t.Errorf("%q", got)
	}
	for _, bad := range []struct {
		p string
		d int
	}{{"", 6}, {"INVC", 6}, {"IN V", 2}, {"I/", 2}, {"INV", 0}} {
		if _, err := NewNumberer(bad.p, bad.d); !errors.Is(err, ErrInvalidNumberer) {
			t.Errorf("NewNumberer(%q, %d) accepted", bad.p, bad.d)
		}
	}
	for _, bad := range []string{"", "INV/26-27/00001", "INV/26-28/000001", "INV/26-27/000000", "XNV/26-27/000001", "INV/2a-27/000001", "INV/26-27/+00001", "INV/26_27/000001", "INV/99-00/000001"} {
		if _, _, err := n.Parse(bad); !errors.Is(err, ErrInvalidNumber) {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
	for _, bad := range []string{"", "INV 1", strings.Repeat("1", 17), "INV#1", "ÍNV"} {
		if ValidateNumber(bad) == nil {
			t.Errorf("ValidateNumber(%q) accepted", bad)
		}
	}
}

func FuzzNumberParse(f *testing.F) {
	f.Add("INV/26-27/000001")
	f.Add("INV/98-99/999999")
	f.Fuzz(func(t *testing.T, s string) {
		n := DefaultNumberer()
		fy, seq, err := n.Parse(s)
		if err != nil {
			return
		}
		back, err := n.Format(fy, seq)
		if err != nil || back != s {
			t.Fatalf("Parse(%q) = %d %d, formats back as %q %v", s, fy, seq, back, err)
		}
	})
}

func TestWords(t *testing.T) {
	tests := []struct{ in, words, inr string }{
		{"0", "Rupees Zero Only", "0.00"},
		{"1", "Rupees One Only", "1.00"},
		{"0.5", "Rupees Zero and Fifty Paise Only", "0.50"},
		{"590", "Rupees Five Hundred Ninety Only", "590.00"},
		{"590.01", "Rupees Five Hundred Ninety and One Paise Only", "590.01"},
		{"1000", "Rupees One Thousand Only", "1,000.00"},
		{"12345.67", "Rupees Twelve Thousand Three Hundred Forty Five and Sixty Seven Paise Only", "12,345.67"},
		{"100000", "Rupees One Lakh Only", "1,00,000.00"},
		{"1234567.89", "Rupees Twelve Lakh Thirty Four Thousand Five Hundred Sixty Seven and Eighty Nine Paise Only", "12,34,567.89"},
		{"10000000", "Rupees One Crore Only", "1,00,00,000.00"},
		{"9999999999999999.99", "Rupees Ninety Nine Crore Ninety Nine Lakh Ninety Nine Thousand Nine Hundred Ninety Nine Crore Ninety Nine Lakh Ninety Nine Thousand Nine Hundred Ninety Nine and Ninety Nine Paise Only", "9,99,99,99,99,99,99,999.99"},
		{"-1234.5", "", "-1,234.50"},
	}
	for _, tt := range tests {
		if got := AmountInWords(dec(tt.in)); got != tt.words {
			t.Errorf("AmountInWords(%s) = %q", tt.in, got)
		}
		if got := FormatINR(dec(tt.in)); got != tt.inr {
			t.Errorf("FormatINR(%s) = %q", tt.in, got)
		}
	}
}
