package main

import (
	"bytes"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyledger/keyledger/examples/gateway/internal/invoice"
	"github.com/keyledger/keyledger/internal/pgtest"
)

// TestPostgres runs two gateways on one fresh PostgreSQL schema: the
// quickstart walk on one, Razorpay order → verify → invoice PDF on both,
// with invoice numbers shared (consecutive across the instances) and the
// balance seen by either. It skips without KEYLEDGER_TEST_POSTGRES.
func TestPostgres(t *testing.T) {
	dsn := pgtest.DSN(t)
	// -db names a file that must stay unused: -postgres replaces it.
	unused := filepath.Join(t.TempDir(), "unused.db")
	a := startGatewayAt(t, time.Now, unused, "-postgres", dsn)
	b := startGatewayAt(t, time.Now, unused, "-postgres", dsn)

	// signup → login → key → chat completion → balance, on a.
	u := a.signup("Pg")
	st, _, body := a.do("POST", "/inference/v1/chat/completions", u.key, chatBody("forii/deepseek-v3", 4, false))
	if st != 200 {
		t.Fatalf("chat: %d %s", st, body)
	}
	// ₹50 grant − (10 × 330/1M + 4 × 350/1M) = ₹49.9953; b sees it too.
	if bal := a.must(200, "GET", "/v1/accounts/"+u.id+"/balance", u.token, nil); num(t, bal["credits_inr"]).String() != "50" {
		t.Fatalf("balance: %v", bal)
	}
	entries := b.ledger(u)
	if len(entries) != 2 || entries[0]["type"] != "debit" || num(t, entries[0]["balance_inr"]).String() != "49.9953" {
		t.Fatalf("ledger: %v", entries)
	}

	// Order on a, verify on b (orders are shared), invoice 1 of the year.
	orderID := a.buy(u, "500")
	v := b.must(200, "POST", "/v1/accounts/"+u.id+"/credits/verify", u.token, verifyBody(orderID, "pay_29QQoUBi66xm2f", defaultRazorpaySecret))
	if num(t, v["credits_inr"]).String() != "550" { // 49.9953 + 500, to the paisa
		t.Fatalf("verify: %v", v)
	}
	fy := invoice.FinancialYearOf(time.Now())
	want1, err := invoice.DefaultNumberer().Format(fy, 1)
	if err != nil {
		t.Fatal(err)
	}
	inv := a.must(200, "GET", "/v1/accounts/"+u.id+"/invoices", u.token, nil)["data"].([]any)
	if len(inv) != 1 {
		t.Fatalf("invoices: %v", inv)
	}
	i0 := inv[0].(map[string]any)
	if i0["number"] != want1 || num(t, i0["amount_inr"]).String() != "500" {
		t.Fatalf("invoice: %v, want number %s", i0, want1)
	}
	// The audit log is shared too: b lists what a and b recorded, in order.
	var actions []string
	for _, e := range b.must(200, "GET", "/v1/accounts/"+u.id+"/audit", u.token, nil)["data"].([]any) {
		actions = append(actions, e.(map[string]any)["action"].(string))
	}
	if got := strings.Join(actions, " "); got != "credits.purchase credits.order_create key.create session.create credits.grant account.create" {
		t.Fatalf("audit log on PostgreSQL: %s", got)
	}
	st, h, pdf := b.do("GET", i0["url"].(string), u.token, nil)
	if st != 200 || h.Get("Content-Type") != "application/pdf" || !bytes.HasPrefix(pdf, []byte("%PDF-")) {
		t.Fatalf("pdf: %d %s %.40q", st, h.Get("Content-Type"), pdf)
	}
	// 50 − 0.0047 + 500 = 549.9953 (shown to the paisa).
	entries = a.ledger(u)
	if len(entries) != 3 || entries[0]["type"] != "purchase" || num(t, entries[0]["balance_inr"]).String() != "549.9953" {
		t.Fatalf("ledger after purchase: %v", entries)
	}
	if bal := b.must(200, "GET", "/v1/accounts/"+u.id+"/balance", u.token, nil); num(t, bal["credits_inr"]).String() != "550" {
		t.Fatalf("balance after purchase: %v", bal)
	}

	// Concurrent purchases verified on both instances at once (each one
	// twice) get one invoice each, numbered 2..n+1 with no gap or repeat.
	const n = 6
	users := make([]user, n)
	orders := make([]string, n)
	for i := range users {
		users[i] = a.signup(fmt.Sprintf("Buyer%d", i))
		orders[i] = a.buy(users[i], "100")
	}
	var wg sync.WaitGroup
	for i := range n {
		for _, g := range []*gw{a, b} {
			wg.Go(func() {
				st, _, body := g.do("POST", "/v1/accounts/"+users[i].id+"/credits/verify", users[i].token,
					verifyBody(orders[i], fmt.Sprintf("pay_29QQoUBi66xm%02d", i), defaultRazorpaySecret))
				if st != 200 {
					t.Errorf("verify %d: %d %s", i, st, body)
				}
			})
		}
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	var got []string
	for i, bu := range users {
		inv := b.must(200, "GET", "/v1/accounts/"+bu.id+"/invoices", bu.token, nil)["data"].([]any)
		if len(inv) != 1 {
			t.Fatalf("buyer %d invoices: %v", i, inv)
		}
		got = append(got, inv[0].(map[string]any)["number"].(string))
		if e := a.ledger(bu); len(e) != 2 || num(t, e[0]["balance_inr"]).String() != "150" {
			t.Fatalf("buyer %d ledger: %v", i, e)
		}
	}
	sort.Strings(got)
	for i := range n {
		want, _ := invoice.DefaultNumberer().Format(fy, int64(i+2))
		if got[i] != want {
			t.Fatalf("invoice numbers %v, want %s..", got, want)
		}
	}
}
