package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"strconv"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/dashboard"
)

// dashboardPath is where OpenRush's customer dashboard is mounted: API
// access (keys), Activity (usage and requests) and Billing (balance and
// purchases), in whole credits.
const dashboardPath = "/dashboard"

// newDashboard is keyledger's dashboard for OpenRush. Purchases are in
// $10 steps, shown as the credits they buy, through the same simulated
// checkout as POST /v1/me/credits/purchase.
func (s *api) newDashboard() (*dashboard.Handler, error) {
	p := &dashPayments{s: s}
	return dashboard.New(s.kl, &dashboard.Options{
		BasePath: dashboardPath, ProductName: "OpenRush", Currency: "credits", Now: s.now, Logger: s.log,
		Sections: []dashboard.Section{dashboard.SectionKeys, dashboard.SectionUsage, dashboard.SectionRequests,
			dashboard.SectionBalance, dashboard.SectionCredits, dashboard.SectionActivity},
		Payments: p,
	})
}

// dashPayments sells credits in $10 steps with the simulated checkout.
type dashPayments struct{ s *api }

// step is the credits one $10 step buys.
func (p *dashPayments) step() credits.Amount { return credits.AmountFromInt(10 * p.s.creditsPerUSD) }

// CheckAmount accepts whole $10 steps up to maxPurchaseUSD.
func (p *dashPayments) CheckAmount(a credits.Amount) error {
	step := p.step()
	if !a.IsPositive() || !a.MultipleOf(step) || a.Cmp(credits.AmountFromInt(maxPurchaseUSD*p.s.creditsPerUSD)) > 0 {
		return &dashboard.UserError{Message: fmt.Sprintf("Credits are sold in $10 steps of %s credits, up to $%d.", step, maxPurchaseUSD)}
	}
	return nil
}

// StartPurchase returns the simulated checkout of a purchase.
func (p *dashPayments) StartPurchase(_ context.Context, _ string, a credits.Amount) (dashboard.Checkout, error) {
	if err := p.CheckAmount(a); err != nil {
		return dashboard.Checkout{}, err
	}
	var b [12]byte
	_, _ = rand.Read(b[:])
	id := "chk_" + hex.EncodeToString(b[:])
	usd := a.Decimal().IntPart() / p.s.creditsPerUSD
	return dashboard.Checkout{
		OrderID: id, Amount: a,
		Fields: []dashboard.Field{{Name: "checkout_id", Value: id}, {Name: "credits", Value: a.String()}},
		Button: "Pay $" + strconv.FormatInt(usd, 10),
		Note:   "Simulated checkout: no card is charged.",
	}, nil
}

// CompletePurchase credits a checkout once (its id is the idempotency
// key, as the API's Idempotency-Key is).
func (p *dashPayments) CompletePurchase(ctx context.Context, acct string, form url.Values) (dashboard.Purchase, error) {
	id := form.Get("checkout_id")
	a, err := credits.ParseAmount(form.Get("credits"))
	if len(id) != 28 || err != nil {
		return dashboard.Purchase{}, &dashboard.UserError{Message: "This checkout is not valid; start the purchase again."}
	}
	if err := p.CheckAmount(a); err != nil {
		return dashboard.Purchase{}, err
	}
	e, err := p.s.kl.Credits.Purchase(ctx, credits.CreditParams{
		AccountID: acct, Amount: a, Reference: id,
		Description: "Credit purchase (simulated checkout, dashboard)", IdempotencyKey: "purchase:dashboard:" + id,
	})
	if err != nil {
		return dashboard.Purchase{}, err
	}
	return dashboard.Purchase{Amount: e.Amount, TransactionID: e.ID}, nil
}
