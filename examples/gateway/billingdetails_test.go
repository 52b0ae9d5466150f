package main

import (
	"context"
	"encoding/json"
	"io"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/keyledger/keyledger/examples/gateway/internal/invoice"
)

// Customers save GST billing details; invoices issued afterwards carry
// them, and the place of supply decides IGST (another state than the
// supplier's Karnataka) against CGST + SGST (Karnataka).
func TestBillingDetailsOnInvoices(t *testing.T) {
	g := newInproc(t, io.Discard)
	for _, c := range []struct {
		name, gstin, state string
		inter              bool
		taxes              []string
	}{
		{"Mumbai", "27AAPFU0939F1ZV", "27", true, []string{invoice.IGST}},
		{"Bengaluru", "29AAGCG6253J1Z8", "29", false, []string{invoice.CGST, invoice.SGST}},
	} {
		tn := g.newTenant(t, c.name)
		base := "/v1/accounts/" + tn.id
		// Invalid: a bad check character, another state's GSTIN, an unknown state.
		g.must(t, 400, "PUT", base+"/billing_details", tn.token, `{"legal_name":"X","gstin":"27AAPFU0939F1ZA","address":"a","state_code":"27"}`)
		g.must(t, 400, "PUT", base+"/billing_details", tn.token, `{"legal_name":"X","gstin":"`+c.gstin+`","address":"a","state_code":"07"}`)
		g.must(t, 400, "PUT", base+"/billing_details", tn.token, `{"legal_name":"X","address":"a","state_code":"99"}`)
		g.must(t, 400, "PUT", base+"/billing_details", tn.token, `{"gstin":"`+c.gstin+`","address":"a","state_code":"`+c.state+`"}`)
		body, _ := json.Marshal(map[string]string{"legal_name": c.name + " Traders LLP", "gstin": c.gstin, "address": "1 Main Road\n" + c.name, "state_code": c.state})
		saved := g.must(t, 200, "PUT", base+"/billing_details", tn.token, string(body))
		if saved["gstin"] != c.gstin || g.must(t, 200, "GET", base+"/billing_details", tn.token, "")["legal_name"] != c.name+" Traders LLP" {
			t.Fatalf("saved: %v", saved)
		}
		// The tenant's first invoice predates the details and keeps none.
		orderID := g.must(t, 201, "POST", base+"/credits", tn.token, `{"amount_inr":590}`)["order_id"].(string)
		vb, _ := json.Marshal(verifyBody(orderID, "pay_"+orderID[len("order_"):], defaultRazorpaySecret))
		invID := g.must(t, 200, "POST", base+"/credits/verify", tn.token, string(vb))["invoice_id"].(string)

		row, err := g.s.bill.invoice(context.Background(), tn.id, invID)
		if err != nil {
			t.Fatal(err)
		}
		doc := g.s.invoiceDoc(row)
		tot, err := invoice.Compute(doc)
		if err != nil {
			t.Fatal(err)
		}
		if doc.Customer.GSTIN != c.gstin || doc.Customer.Name != c.name+" Traders LLP" || tot.InterState != c.inter || tot.PlaceOfSupply != c.state || len(tot.Taxes) != len(c.taxes) {
			t.Fatalf("%s: customer %+v, totals %+v", c.name, doc.Customer, tot)
		}
		for i, name := range c.taxes {
			if tot.Taxes[i].Name != name {
				t.Fatalf("%s: taxes %+v, want %v", c.name, tot.Taxes, c.taxes)
			}
		}
		old, _ := g.s.bill.invoice(context.Background(), tn.id, tn.invoiceID)
		if old.Buyer.GSTIN != "" {
			t.Fatalf("an invoice issued before the details changed: %+v", old.Buyer)
		}
		list := g.must(t, 200, "GET", base+"/invoices", tn.token, "")["data"].([]any)
		if first := list[0].(map[string]any); first["gstin"] != c.gstin || first["inter_state"] != c.inter || first["place_of_supply"] != c.state {
			t.Fatalf("invoice list: %v", first)
		}
		if _, err := invoice.Render(doc, nil); err != nil {
			t.Fatalf("render: %v", err)
		}
	}
}

func FuzzBillingDetails(f *testing.F) {
	f.Add("Acme LLP", "27AAPFU0939F1ZV", "1 Road", "27")
	f.Add("", "", "", "29")
	f.Add("x\x00", "29aagcg6253j1z8", "a\nb", "29")
	f.Fuzz(func(t *testing.T, name, gstin, addr, state string) {
		d, err := billingDetails{LegalName: name, GSTIN: gstin, Address: addr, StateCode: state}.normalize()
		if err != nil {
			return
		}
		if d.GSTIN != "" && (invoice.ValidateGSTIN(d.GSTIN) != nil || d.GSTIN[:2] != d.StateCode || d.LegalName == "") {
			t.Fatalf("accepted %+v", d)
		}
		// Whatever is accepted renders on an invoice.
		doc := invoice.Invoice{Number: "FY2026-27/000001", Date: time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC), Supplier: demoSupplier(), TaxInclusive: true,
			Customer: buyer(invoiceRow{CustomerName: "n", Buyer: d}), Items: []invoice.Item{{Description: "x", Amount: decimal.NewFromInt(100)}}}
		if _, err := invoice.Compute(doc); err != nil {
			t.Fatalf("accepted %+v, but the invoice fails: %v", d, err)
		}
	})
}
