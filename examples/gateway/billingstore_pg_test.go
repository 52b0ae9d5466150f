package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/keyledger/keyledger/dashboard"
	"github.com/keyledger/keyledger/internal/pgtest"
)

// The payment, billing-details and dashboard-slot tables behave the same
// on SQLite and on PostgreSQL (KEYLEDGER_TEST_POSTGRES).
func TestBillingStoreTables(t *testing.T) {
	ctx := context.Background()
	stores := map[string]func() (*billing, error){
		"sqlite": func() (*billing, error) { return openBilling(ctx, filepath.Join(t.TempDir(), "b.db")) },
	}
	if os.Getenv("KEYLEDGER_TEST_POSTGRES") != "" {
		dsn := pgtest.DSN(t)
		stores["postgres"] = func() (*billing, error) { return openBillingPG(ctx, dsn) }
	}
	for name, open := range stores {
		t.Run(name, func(t *testing.T) {
			b, err := open()
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			acct := "acct_store_" + name + time.Now().Format("150405.000000000")
			now := time.Now()

			// A recharge failure before any customer, then the customer.
			if err := b.setRechargeError(ctx, acct, "no method", now); err != nil {
				t.Fatal(err)
			}
			c, err := b.saveCustomer(ctx, acct, "cust_AAAAAAAAAAAAAA")
			if err != nil || c.CustomerID != "cust_AAAAAAAAAAAAAA" || c.RechargeError != "no method" {
				t.Fatalf("customer: %+v %v", c, err)
			}
			if c, _ = b.saveCustomer(ctx, acct, "cust_BBBBBBBBBBBBBB"); c.CustomerID != "cust_AAAAAAAAAAAAAA" {
				t.Fatalf("a second customer replaced the first: %+v", c)
			}
			if err := b.saveToken(ctx, acct, c.CustomerID, "token_X"); err != nil {
				t.Fatal(err)
			}
			if err := b.setRechargeError(ctx, acct, "", now); err != nil {
				t.Fatal(err)
			}
			if c, _ = b.customer(ctx, acct); c.TokenID != "token_X" || c.RechargeError != "" {
				t.Fatalf("after token and success: %+v", c)
			}

			d := billingDetails{LegalName: "Acme LLP", GSTIN: "27AAPFU0939F1ZV", Address: "1 Road", StateCode: "27"}
			if err := b.saveBillingDetails(ctx, acct, d, now.UnixNano()); err != nil {
				t.Fatal(err)
			}
			d.Address = "2 Road"
			if err := b.saveBillingDetails(ctx, acct, d, now.UnixNano()); err != nil {
				t.Fatal(err)
			}
			if got, err := b.billingDetailsOf(ctx, acct); err != nil || got != d {
				t.Fatalf("billing details: %+v %v", got, err)
			}

			s := dashSlots{b: b}
			id := "0123456789abcdef0123456789abcdef"[:20] + name + now.Format("150405")
			if err := s.Put(ctx, id, []byte{1, 2, 3}, now.Add(time.Minute)); err != nil {
				t.Fatal(err)
			}
			if got, err := s.Take(ctx, id, now); err != nil || len(got) != 3 {
				t.Fatalf("take: %v %v", got, err)
			}
			if _, err := s.Take(ctx, id, now); !errors.Is(err, dashboard.ErrNotFound) {
				t.Fatalf("second take: %v", err)
			}
			_ = s.Put(ctx, id+"x", []byte{1}, now.Add(time.Minute))
			if _, err := s.Take(ctx, id+"x", now.Add(time.Minute)); !errors.Is(err, dashboard.ErrNotFound) {
				t.Fatalf("expired take: %v", err)
			}
		})
	}
}
