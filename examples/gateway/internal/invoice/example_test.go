package invoice_test

import (
	"bytes"
	"fmt"
	"time"

	"github.com/keyledger/keyledger/examples/gateway/internal/invoice"
	"github.com/shopspring/decimal"
)

// Example prices a ₹500 credit purchase (GST on top), numbers the invoice
// in its financial year, and renders the PDF.
func Example() {
	supplier := invoice.Supplier{Name: "Forii AI Private Limited", Address: "12 MG Road, Bengaluru", GSTIN: "29AAGCG6253J1Z8"}
	paidAt := time.Date(2026, 4, 1, 9, 15, 0, 0, invoice.IST())

	inv := invoice.Invoice{
		Date:     paidAt,
		Supplier: supplier,
		Customer: invoice.Customer{Name: "Asha Rao", Email: "asha@example.com", StateCode: "27"},
		Items:    []invoice.Item{{Description: "Prepaid API credits", Amount: decimal.RequireFromString("500")}},
	}
	totals, err := invoice.Compute(inv) // before creating the payment order
	if err != nil {
		panic(err)
	}
	fmt.Println("charge", totals.Total.StringFixed(2), "credit", totals.Taxable.StringFixed(2))
	for _, t := range totals.Taxes {
		fmt.Printf("%s %s%% %s\n", t.Name, t.RatePercent, t.Amount.StringFixed(2))
	}

	fy := invoice.FinancialYearOf(paidAt)
	inv.Number, _ = invoice.DefaultNumberer().Format(fy, 1) // 1 = this year's counter, kept by the caller
	fmt.Println(fy, inv.Number)

	pdf, err := invoice.Render(inv, nil)
	if err != nil {
		panic(err)
	}
	fmt.Println(string(pdf[:5]), bytes.HasSuffix(bytes.TrimSpace(pdf), []byte("%%EOF")))
	fmt.Println(invoice.AmountInWords(totals.Total))
	// Output:
	// charge 590.00 credit 500.00
	// IGST 18% 90.00
	// 2026-27 INV/26-27/000001
	// %PDF- true
	// Rupees Five Hundred Ninety Only
}
