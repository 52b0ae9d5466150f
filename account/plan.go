package account

import (
	"fmt"

	"github.com/shopspring/decimal"
)

// Limits are per-minute rate limits. A zero field means the limit is not
// enforced; each is at most MaxPerMinute.
type Limits struct {
	RequestsPerMinute         int64 `json:"requests_per_minute"`
	PromptTokensPerMinute     int64 `json:"prompt_tokens_per_minute"`
	CompletionTokensPerMinute int64 `json:"completion_tokens_per_minute"`
}

// MaxPerMinute bounds every limit: a billion units a minute is one unit
// every 60 ns, the finest a rate limiter on a nanosecond clock can pace.
const MaxPerMinute = 1_000_000_000

func (l Limits) valid() bool {
	ok := func(n int64) bool { return n >= 0 && n <= MaxPerMinute }
	return ok(l.RequestsPerMinute) && ok(l.PromptTokensPerMinute) && ok(l.CompletionTokensPerMinute)
}

// Plan is one tier of the catalog. Amounts are in the ledger's unit (INR for
// Forii) and exact.
type Plan struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Limits Limits `json:"limits"`
	// Custom marks plans whose limits are negotiated per account
	// (Account.Limits); the plan's own Limits then serve as the fallback.
	Custom bool `json:"custom,omitempty"`
	// SignupGrant is credited when an account is created on this plan
	// through the keyledger facade.
	SignupGrant decimal.Decimal `json:"signup_grant"`
	// MonthlyCap bounds spend per calendar month in the account's time zone;
	// zero means no cap.
	MonthlyCap decimal.Decimal `json:"monthly_cap"`
	// Overdraft is how far below zero the balance may go; zero means none.
	Overdraft decimal.Decimal `json:"overdraft"`
}

// Catalog is an immutable set of plans with one default. Hosts replace the
// catalog by passing their own to Options.Catalog.
type Catalog struct {
	plans map[string]Plan
	order []string
	def   string
}

// NewCatalog returns a catalog of plans whose default plan is defaultID.
// IDs must be unique and non-empty; limits and amounts must not be negative.
func NewCatalog(defaultID string, plans ...Plan) (*Catalog, error) {
	c := &Catalog{plans: make(map[string]Plan, len(plans)), def: defaultID}
	for _, p := range plans {
		switch {
		case p.ID == "":
			return nil, fmt.Errorf("%w: plan with empty ID", ErrInvalidPlanCatalog)
		case c.has(p.ID):
			return nil, fmt.Errorf("%w: duplicate plan %q", ErrInvalidPlanCatalog, p.ID)
		case !p.Limits.valid() || p.SignupGrant.IsNegative() || p.MonthlyCap.IsNegative() || p.Overdraft.IsNegative():
			return nil, fmt.Errorf("%w: plan %q has negative limits or amounts", ErrInvalidPlanCatalog, p.ID)
		}
		c.plans[p.ID] = p
		c.order = append(c.order, p.ID)
	}
	if !c.has(defaultID) {
		return nil, fmt.Errorf("%w: default plan %q is not in the catalog", ErrInvalidPlanCatalog, defaultID)
	}
	return c, nil
}

func (c *Catalog) has(id string) bool { _, ok := c.plans[id]; return ok }

// DefaultCatalog returns Forii's tiers: Free (60 RPM, 100K prompt / 10K
// completion TPM, ₹50 signup grant, the default), Starter (600 / 1M / 100K),
// Pro (6,000 / 10M / 1M) and Enterprise (custom limits per account).
func DefaultCatalog() *Catalog {
	plans := []Plan{
		{ID: "free", Name: "Free", Limits: Limits{60, 100_000, 10_000}, SignupGrant: decimal.NewFromInt(50)},
		{ID: "starter", Name: "Starter", Limits: Limits{600, 1_000_000, 100_000}},
		{ID: "pro", Name: "Pro", Limits: Limits{6_000, 10_000_000, 1_000_000}},
		{ID: "enterprise", Name: "Enterprise", Custom: true},
	}
	c := &Catalog{plans: make(map[string]Plan, len(plans)), def: "free"}
	for _, p := range plans {
		c.plans[p.ID] = p
		c.order = append(c.order, p.ID)
	}
	return c
}

// Plan returns the plan with the given ID.
func (c *Catalog) Plan(id string) (Plan, bool) {
	p, ok := c.plans[id]
	return p, ok
}

// Default returns the plan new accounts get when none is named.
func (c *Catalog) Default() Plan { return c.plans[c.def] }

// Plans returns all plans in the order they were given.
func (c *Catalog) Plans() []Plan {
	out := make([]Plan, len(c.order))
	for i, id := range c.order {
		out[i] = c.plans[id]
	}
	return out
}

// EffectiveLimits returns the limits that apply to a: its override if set,
// else its plan's.
func (c *Catalog) EffectiveLimits(a Account) Limits {
	if a.Limits != nil {
		return *a.Limits
	}
	p, _ := c.Plan(a.Plan)
	return p.Limits
}
