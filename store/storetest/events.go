package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/internal/outbox"
	"github.com/keyledger/keyledger/usage"
)

// runEvents is the conformance suite of the event outbox (issue 21):
// events written with the changes that cause them, claimed in order per
// account, leased, retried, pruned; endpoints and thresholds per account.
func runEvents(t *testing.T, newStore NewStoreFunc) {
	t.Run("EndpointsAndThresholds", func(t *testing.T) { testEventEndpoints(t, newStore) })
	t.Run("ConcurrentEndpointsWithinMax", func(t *testing.T) { testEventEndpointsConcurrent(t, newStore) })
	t.Run("KeyEventsInOrder", func(t *testing.T) { testEventKeys(t, newStore) })
	t.Run("ExpiringKeysOnce", func(t *testing.T) { testEventExpiring(t, newStore) })
	t.Run("LedgerCrossings", func(t *testing.T) { testEventCrossings(t, newStore) })
	t.Run("KeyBudgetCrossings", func(t *testing.T) { testEventKeyBudget(t, newStore) })
	t.Run("SettleCrossing", func(t *testing.T) { testEventSettleCrossing(t, newStore) })
	t.Run("MeteredCrossing", func(t *testing.T) { testEventMetered(t, newStore) })
	t.Run("ConcurrentSpendsCrossOnce", func(t *testing.T) { testEventConcurrentCrossing(t, newStore) })
	t.Run("ClaimLeaseRetryPrune", func(t *testing.T) { testEventClaim(t, newStore) })
	t.Run("ConcurrentDispatchersKeepOrder", func(t *testing.T) { testEventConcurrentDispatch(t, newStore) })
}

func outboxOf(t testing.TB, st any) outbox.Store {
	t.Helper()
	o, ok := st.(outbox.Store)
	if !ok {
		t.Fatalf("%T has no event outbox (internal/outbox.Store)", st)
	}
	return o
}

// collector is a host hook that records what it receives.
type collector struct {
	mu   sync.Mutex
	seen []events.Event
	fail func(events.Event) error
}

func (c *collector) hook(_ context.Context, e events.Event) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fail != nil {
		if err := c.fail(e); err != nil {
			return err
		}
	}
	c.seen = append(c.seen, e)
	return nil
}

func (c *collector) types(acct string) []events.Type {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []events.Type
	for _, e := range c.seen {
		if acct == "" || e.AccountID == acct {
			out = append(out, e.Type)
		}
	}
	return out
}

// drain runs d until a round claims nothing.
func drain(t testing.TB, d *outbox.Dispatcher) {
	t.Helper()
	for range 1000 {
		n, err := d.RunOnce(ctx())
		if err != nil {
			t.Fatalf("RunOnce: %v", err)
		}
		if n == 0 {
			return
		}
	}
	t.Fatal("dispatcher did not drain")
}

func (e *env) dispatcher(t testing.TB, c *collector, o outbox.Options) *outbox.Dispatcher {
	t.Helper()
	o.Now = e.clk.Now
	if c != nil {
		o.Hook = c.hook
	}
	o.Jitter = func() float64 { return 0 }
	return outbox.New(outboxOf(t, e.st), o)
}

func (e *env) eventsService() *events.Service {
	return events.NewService(e.st, &events.Options{Now: e.clk.Now,
		LookupIP: func(context.Context, string) ([]netip.Addr, error) {
			return []netip.Addr{netip.MustParseAddr("93.184.216.34")}, nil
		}})
}

// testEventEndpointsConcurrent: concurrent creates never take an account
// past its maximum (a count then an insert without a lock let each of
// them see room under PostgreSQL's READ COMMITTED).
func testEventEndpointsConcurrent(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	a := mustCreate(t, e.acc, account.CreateParams{Name: "A", Email: "a@example.com"})
	const tries, max = 24, 3
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range tries {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			ep := events.Endpoint{ID: fmt.Sprintf("we_c%02d", i), AccountID: a.ID, URL: "https://hooks.example.com/k",
				Secret: "whsec_x", CreatedAt: time.Unix(1, 0)}
			if err := e.st.CreateWebhookEndpoint(ctx(), ep, max); err != nil && !errors.Is(err, events.ErrTooManyEndpoints) {
				t.Errorf("create: %v", err)
			}
		}()
	}
	close(start)
	wg.Wait()
	list, err := e.st.WebhookEndpoints(ctx(), a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != max {
		t.Fatalf("%d endpoints after %d concurrent creates, want the maximum %d", len(list), tries, max)
	}
}

func testEventEndpoints(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	a := mustCreate(t, e.acc, account.CreateParams{Name: "A", Email: "a@example.com"})
	b := mustCreate(t, e.acc, account.CreateParams{Name: "B", Email: "b@example.com"})
	svc := e.eventsService()
	ep, err := svc.CreateEndpoint(ctx(), a.ID, "https://hooks.example.com/k", "prod")
	if err != nil {
		t.Fatal(err)
	}
	if ep.Secret == "" || ep.ID == "" {
		t.Fatalf("created endpoint %+v: want an ID and a secret shown once", ep)
	}
	list, err := svc.Endpoints(ctx(), a.ID)
	if err != nil || len(list) != 1 || list[0].ID != ep.ID || list[0].Secret != "" || list[0].URL != ep.URL {
		t.Fatalf("Endpoints = %+v, %v; want the one endpoint without its secret", list, err)
	}
	if list, _ := svc.Endpoints(ctx(), b.ID); len(list) != 0 {
		t.Fatalf("another account sees %d endpoints", len(list))
	}
	if err := svc.DeleteEndpoint(ctx(), b.ID, ep.ID); !errors.Is(err, events.ErrNotFound) {
		t.Fatalf("delete by another account = %v, want ErrNotFound", err)
	}
	if _, err := svc.CreateEndpoint(ctx(), "acct_nope", "https://hooks.example.com/k", ""); !errors.Is(err, events.ErrAccountNotFound) {
		t.Fatalf("endpoint of an unknown account = %v, want ErrAccountNotFound", err)
	}
	for i := range 9 {
		if _, err := svc.CreateEndpoint(ctx(), a.ID, fmt.Sprintf("https://hooks.example.com/%d", i), ""); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := svc.CreateEndpoint(ctx(), a.ID, "https://hooks.example.com/11", ""); !errors.Is(err, events.ErrTooManyEndpoints) {
		t.Fatalf("11th endpoint = %v, want ErrTooManyEndpoints", err)
	}
	if err := svc.DeleteEndpoint(ctx(), a.ID, ep.ID); err != nil {
		t.Fatal(err)
	}
	if err := svc.DeleteEndpoint(ctx(), a.ID, ep.ID); !errors.Is(err, events.ErrNotFound) {
		t.Fatalf("second delete = %v, want ErrNotFound", err)
	}

	got, err := svc.SetAlertThresholds(ctx(), a.ID, []decimal.Decimal{decimal.RequireFromString("10"), decimal.RequireFromString("100.5")})
	if err != nil {
		t.Fatal(err)
	}
	back, err := svc.AlertThresholds(ctx(), a.ID)
	if err != nil || len(back) != 2 || !back[0].Equal(got[0]) || !back[0].Equal(decimal.RequireFromString("100.5")) || !back[1].Equal(decimal.RequireFromString("10")) {
		t.Fatalf("AlertThresholds = %v, %v; want [100.5 10]", back, err)
	}
	if _, err := svc.SetAlertThresholds(ctx(), "acct_nope", got); !errors.Is(err, events.ErrAccountNotFound) {
		t.Fatalf("thresholds of an unknown account = %v", err)
	}
	if _, err := svc.SetAlertThresholds(ctx(), a.ID, []decimal.Decimal{decimal.RequireFromString("-1")}); !errors.Is(err, events.ErrInvalidThreshold) {
		t.Fatalf("negative threshold = %v", err)
	}
	if back, _ := svc.AlertThresholds(ctx(), a.ID); len(back) != 2 {
		t.Fatalf("a refused update changed the thresholds to %v", back)
	}
	if _, err := svc.SetAlertThresholds(ctx(), a.ID, nil); err != nil {
		t.Fatal(err)
	}
	if back, _ := svc.AlertThresholds(ctx(), a.ID); len(back) != 0 {
		t.Fatalf("cleared thresholds = %v", back)
	}
}

func testEventKeys(t *testing.T, newStore NewStoreFunc) {
	e := newKeyEnv(t, newStore, nil)
	a := e.account(t, "keys@example.com")
	b := e.account(t, "other@example.com")
	_, k := e.create(t, apikey.CreateParams{AccountID: a.ID, Name: "one", Type: "api"})
	if _, _, err := e.keys.Rotate(ctx(), a.ID, k.ID, 0); err != nil {
		t.Fatal(err)
	}
	_, kb := e.create(t, apikey.CreateParams{AccountID: b.ID, Name: "b", Type: "api"})
	if _, err := e.keys.Revoke(ctx(), a.ID, k.ID); err != nil {
		t.Fatal(err)
	}
	raw, _ := e.create(t, apikey.CreateParams{AccountID: b.ID, Name: "leaky", Type: "api"})
	if _, _, err := e.keys.DisableLeaked(ctx(), raw); err != nil {
		t.Fatal(err)
	}
	c := &collector{}
	drain(t, e.dispatcher(t, c, outbox.Options{}))
	if got, want := c.types(a.ID), []events.Type{events.KeyCreated, events.KeyRotated, events.KeyRevoked}; !slices.Equal(got, want) {
		t.Fatalf("account A events %v, want %v", got, want)
	}
	if got, want := c.types(b.ID), []events.Type{events.KeyCreated, events.KeyCreated, events.KeyLeaked}; !slices.Equal(got, want) {
		t.Fatalf("account B events %v, want %v", got, want)
	}
	var d struct {
		KeyID string `json:"key_id"`
		Hint  string `json:"hint"`
	}
	first := c.seen[0]
	if err := json.Unmarshal(first.Data, &d); err != nil || first.ID == "" || first.Time.IsZero() {
		t.Fatalf("event %+v: %v", first, err)
	}
	if d.KeyID != k.ID && d.KeyID != kb.ID {
		t.Fatalf("key event names key %q", d.KeyID)
	}
	ids := map[string]bool{}
	for _, ev := range c.seen {
		if ids[ev.ID] {
			t.Fatalf("event %s delivered twice without a failure", ev.ID)
		}
		ids[ev.ID] = true
	}
	// Nothing is left: a second drain delivers nothing.
	drain(t, e.dispatcher(t, c, outbox.Options{}))
	if len(c.seen) != 6 {
		t.Fatalf("%d deliveries after a second drain, want 6", len(c.seen))
	}
}

func testEventExpiring(t *testing.T, newStore NewStoreFunc) {
	e := newKeyEnv(t, newStore, nil)
	a := e.account(t, "exp@example.com")
	now := e.clk.Now()
	_, soon := e.create(t, apikey.CreateParams{AccountID: a.ID, Name: "soon", Type: "api", ExpiresAt: now.Add(3 * 24 * time.Hour)})
	e.create(t, apikey.CreateParams{AccountID: a.ID, Name: "later", Type: "api", ExpiresAt: now.Add(30 * 24 * time.Hour)})
	e.create(t, apikey.CreateParams{AccountID: a.ID, Name: "never", Type: "api"})
	_, revoked := e.create(t, apikey.CreateParams{AccountID: a.ID, Name: "revoked", Type: "api", ExpiresAt: now.Add(24 * time.Hour)})
	if _, err := e.keys.Revoke(ctx(), a.ID, revoked.ID); err != nil {
		t.Fatal(err)
	}
	o := outboxOf(t, e.st)
	week := 7 * 24 * time.Hour
	n, err := o.NoticeExpiringKeys(ctx(), now, now.Add(week), 100)
	if err != nil || n != 1 {
		t.Fatalf("first scan = %d, %v; want 1 (only the key expiring in 3 days)", n, err)
	}
	if n, err := o.NoticeExpiringKeys(ctx(), now, now.Add(week), 100); err != nil || n != 0 {
		t.Fatalf("second scan = %d, %v; want 0 (sent once per key)", n, err)
	}
	// Extending the key's expiry makes it a new expiry, announced again
	// when it comes within the window.
	exp := now.Add(5 * 24 * time.Hour)
	if _, err := e.keys.Update(ctx(), a.ID, soon.ID, apikey.UpdateParams{ExpiresAt: &exp}); err != nil {
		t.Fatal(err)
	}
	if n, err := o.NoticeExpiringKeys(ctx(), now, now.Add(week), 100); err != nil || n != 1 {
		t.Fatalf("scan after a new expiry = %d, %v; want 1", n, err)
	}
	// A bounded batch: three keys expiring, a batch of two.
	for i := range 3 {
		e.create(t, apikey.CreateParams{AccountID: a.ID, Name: fmt.Sprintf("b%d", i), Type: "api", ExpiresAt: now.Add(time.Duration(i+1) * time.Hour)})
	}
	if n, _ := o.NoticeExpiringKeys(ctx(), now, now.Add(week), 2); n != 2 {
		t.Fatalf("bounded scan = %d, want 2", n)
	}
	if n, _ := o.NoticeExpiringKeys(ctx(), now, now.Add(week), 2); n != 1 {
		t.Fatalf("next scan = %d, want 1", n)
	}
	c := &collector{}
	drain(t, e.dispatcher(t, c, outbox.Options{}))
	if got := c.types(a.ID); len(got) != 13 || got[len(got)-1] != events.KeyExpiring { // 7 created, 1 revoked, 5 expiring
		t.Fatalf("events %v", got)
	}
}

func testEventCrossings(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	a := mustCreate(t, e.acc, account.CreateParams{Name: "A", Email: "cross@example.com"})
	svc := e.ledger(t, nil)
	openLedger(t, svc, a.ID, credits.Policy{MonthlyCap: amt(t, "100")})
	if _, err := e.eventsService().SetAlertThresholds(ctx(), a.ID, []decimal.Decimal{decimal.NewFromInt(50), decimal.NewFromInt(10)}); err != nil {
		t.Fatal(err)
	}
	mustCredit(t, svc.Purchase, credits.CreditParams{AccountID: a.ID, Amount: amt(t, "120"), Reference: "pay_123", IdempotencyKey: "p1"})
	mustDebit(t, svc, a.ID, "55", "d1") // balance 65, spent 55: 50 %
	mustDebit(t, svc, a.ID, "20", "d2") // balance 45 (< 50), spent 75
	mustDebit(t, svc, a.ID, "20", "d3") // balance 25, spent 95: 80 %
	mustDebit(t, svc, a.ID, "5", "d4")  // balance 20, spent 100: 100 %, cap reached
	if _, err := svc.Debit(ctx(), credits.DebitParams{AccountID: a.ID, Amount: amt(t, "1"), IdempotencyKey: "d5"}); !errors.Is(err, credits.ErrMonthlyLimit) {
		t.Fatalf("debit past the cap = %v", err)
	}
	mustDebit(t, svc, a.ID, "20", "d2") // a replay writes nothing new
	mustCredit(t, svc.Grant, credits.CreditParams{AccountID: a.ID, Amount: amt(t, "40"), IdempotencyKey: "g1"})
	c := &collector{}
	drain(t, e.dispatcher(t, c, outbox.Options{}))
	want := []events.Type{events.PaymentCredited, events.BudgetThreshold, events.BalanceLow, events.BudgetThreshold,
		events.BudgetThreshold, events.MonthlyCapReached}
	if got := c.types(a.ID); !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	var low struct {
		Threshold string `json:"threshold"`
		Balance   string `json:"balance"`
	}
	if err := json.Unmarshal(c.seen[2].Data, &low); err != nil || low.Threshold != "50" || low.Balance != "45" {
		t.Fatalf("balance.low data %s (%v)", c.seen[2].Data, err)
	}
	// Rising above a threshold re-armed it (the grant: 60 ≥ 50), so the
	// next fall writes it again; a debit that crosses nothing writes nothing.
	if _, err := svc.SetPolicy(ctx(), a.ID, credits.Policy{MonthlyCap: amt(t, "1000")}); err != nil {
		t.Fatal(err)
	}
	mustDebit(t, svc, a.ID, "5", "d6")  // 55
	mustDebit(t, svc, a.ID, "10", "d7") // 45 < 50
	drain(t, e.dispatcher(t, c, outbox.Options{}))
	if got := c.types(a.ID); !slices.Equal(got[len(want):], []events.Type{events.BalanceLow}) {
		t.Fatalf("after re-arming: %v, want one balance.low", got[len(want):])
	}
}

// A key's spend limit writes budget.threshold events (scope "key") at 50,
// 80 and 100 % of each period's limit, through debits and settlements,
// once per crossing; a key without a limit writes none; a new period
// crosses again.
func testEventKeyBudget(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	a := mustCreate(t, e.acc, account.CreateParams{Name: "K", Email: "keybudget@example.com"})
	svc := e.ledger(t, nil)
	openLedger(t, svc, a.ID, credits.Policy{TimeZone: "UTC"})
	mustCredit(t, svc.Grant, credits.CreditParams{AccountID: a.ID, Amount: amt(t, "100"), IdempotencyKey: "g"})
	setKeyLimit(t, svc, a.ID, "key-a", "10", credits.PeriodDay)
	debit := func(key, amount, idem string) error {
		_, err := svc.Debit(ctx(), credits.DebitParams{AccountID: a.ID, KeyID: key, Amount: amt(t, amount), IdempotencyKey: idem})
		return err
	}
	if err := debit("key-a", "4", "d1"); err != nil { // 40 %: nothing
		t.Fatal(err)
	}
	h, err := reserveKey(svc, a.ID, "key-a", amt(t, "5"))
	if err != nil {
		t.Fatal(err)
	}
	// The settlement takes the key from 4 to 8: 50 and 80 % at once.
	if _, err := svc.Settle(ctx(), credits.SettleParams{HoldID: h.ID, Actual: amt(t, "4")}); err != nil {
		t.Fatal(err)
	}
	if err := debit("key-a", "2", "d2"); err != nil { // 100 %
		t.Fatal(err)
	}
	if err := debit("key-a", "2", "d2"); err != nil { // a replay writes nothing
		t.Fatal(err)
	}
	if err := debit("key-a", "0.01", "d3"); !errors.Is(err, credits.ErrKeyBudgetExceeded) {
		t.Fatalf("debit past the key's limit = %v", err)
	}
	if err := debit("key-b", "30", "d4"); err != nil { // no limit: nothing
		t.Fatal(err)
	}
	nextDay := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
	e.clk.Set(nextDay.Add(time.Minute))
	if err := debit("key-a", "5", "d5"); err != nil { // the new day's 50 %
		t.Fatal(err)
	}
	c := &collector{}
	drain(t, e.dispatcher(t, c, outbox.Options{}))
	type budget struct {
		Scope    string    `json:"scope"`
		KeyID    string    `json:"key_id"`
		Percent  int       `json:"percent"`
		Spent    string    `json:"spent"`
		Limit    string    `json:"limit"`
		Period   string    `json:"period"`
		ResetsAt time.Time `json:"resets_at"`
	}
	var got []budget
	for _, ev := range c.seen {
		if ev.AccountID != a.ID {
			continue
		}
		if ev.Type != events.BudgetThreshold {
			t.Fatalf("unexpected %s event: %s", ev.Type, ev.Data)
		}
		var b budget
		if err := json.Unmarshal(ev.Data, &b); err != nil {
			t.Fatal(err)
		}
		got = append(got, b)
	}
	want := []budget{
		{"key", "key-a", 50, "8", "10", "day", nextDay},
		{"key", "key-a", 80, "8", "10", "day", nextDay},
		{"key", "key-a", 100, "10", "10", "day", nextDay},
		{"key", "key-a", 50, "5", "10", "day", nextDay.Add(24 * time.Hour)},
	}
	if len(got) != len(want) {
		t.Fatalf("key budget events %+v, want %+v", got, want)
	}
	for i := range want {
		if g := got[i]; g.Scope != want[i].Scope || g.KeyID != want[i].KeyID || g.Percent != want[i].Percent ||
			!amt(t, g.Spent).Equal(amt(t, want[i].Spent)) || !amt(t, g.Limit).Equal(amt(t, want[i].Limit)) ||
			g.Period != want[i].Period || !g.ResetsAt.Equal(want[i].ResetsAt) {
			t.Fatalf("event %d = %+v, want %+v", i, g, want[i])
		}
	}
}

// A settlement that takes the balance below a threshold writes balance.low
// (the batch finds the account, and its thresholds, through the hold).
func testEventSettleCrossing(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	a := mustCreate(t, e.acc, account.CreateParams{Name: "S", Email: "settle@example.com"})
	svc := e.ledger(t, nil)
	openLedger(t, svc, a.ID, credits.Policy{})
	mustCredit(t, svc.Grant, credits.CreditParams{AccountID: a.ID, Amount: amt(t, "20"), IdempotencyKey: "g"})
	if _, err := e.eventsService().SetAlertThresholds(ctx(), a.ID, []decimal.Decimal{decimal.NewFromInt(10)}); err != nil {
		t.Fatal(err)
	}
	h, err := svc.Reserve(ctx(), credits.ReserveParams{AccountID: a.ID, Amount: amt(t, "5"), TTL: time.Minute, IdempotencyKey: "r"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Settle(ctx(), credits.SettleParams{HoldID: h.ID, Actual: amt(t, "12")}); err != nil {
		t.Fatal(err)
	}
	c := &collector{}
	drain(t, e.dispatcher(t, c, outbox.Options{}))
	if got := c.types(a.ID); !slices.Equal(got, []events.Type{events.BalanceLow}) {
		t.Fatalf("settle events %v, want [balance.low]", got)
	}
}

func testEventMetered(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	a := mustCreate(t, e.acc, account.CreateParams{Name: "M", Email: "meter@example.com"})
	cs, us := e.metering(t, nil, nil)
	openLedger(t, cs, a.ID, credits.Policy{})
	if _, err := e.eventsService().SetAlertThresholds(ctx(), a.ID, []decimal.Decimal{decimal.NewFromInt(5)}); err != nil {
		t.Fatal(err)
	}
	mustCredit(t, cs.Grant, credits.CreditParams{AccountID: a.ID, Amount: amt(t, "6"), IdempotencyKey: "g"})
	rec := usage.Record{AccountID: a.ID, KeyID: "key_1", Endpoint: "/v1/x", Method: "POST", StatusCode: 200, Cost: amt(t, "2")}
	mustMeter(t, us, usage.MeterParams{Record: rec, IdempotencyKey: "m1"})
	c := &collector{}
	drain(t, e.dispatcher(t, c, outbox.Options{}))
	if got := c.types(a.ID); !slices.Equal(got, []events.Type{events.BalanceLow}) {
		t.Fatalf("metered debit events %v, want [balance.low]", got)
	}
}

func testEventClaim(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	o := outboxOf(t, e.st)
	now := e.clk.Now()
	mk := func(acct string, i int) events.Event {
		return events.Event{ID: fmt.Sprintf("evt_%s_%d", acct, i), Type: events.KeyCreated, AccountID: acct, Time: now, Data: json.RawMessage(`{}`)}
	}
	if err := o.AppendEvents(ctx(), []events.Event{mk("a", 1), mk("b", 1), mk("a", 2), mk("b", 2)}); err != nil {
		t.Fatal(err)
	}
	lease := now.Add(time.Minute)
	p1, err := o.ClaimEvents(ctx(), now, lease, "c1", 10)
	if err != nil || len(p1) != 2 || p1[0].ID != "evt_a_1" || p1[1].ID != "evt_b_1" {
		t.Fatalf("first claim = %+v, %v; want the heads a1, b1", p1, err)
	}
	if p, _ := o.ClaimEvents(ctx(), now, lease, "c2", 10); len(p) != 0 {
		t.Fatalf("claim during the lease = %+v, want nothing (heads leased, later events wait)", p)
	}
	// a1 fails and is retried in a minute; b1 is delivered.
	retry := outbox.Result{EventID: "evt_a_1", Claim: "c1", State: outbox.StatePending, NextAt: now.Add(time.Minute), Attempts: 1,
		Done: []string{"we_x"}, Log: []events.Delivery{{EventID: "evt_a_1", AccountID: "a", EventType: events.KeyCreated, EndpointID: "we_y", Attempt: 1, StatusCode: 500, Error: "status 500", At: now}}}
	if err := o.FinishEvent(ctx(), now, retry); err != nil {
		t.Fatal(err)
	}
	if err := o.FinishEvent(ctx(), now, outbox.Result{EventID: "evt_b_1", Claim: "c1", State: outbox.StateDelivered, Attempts: 1}); err != nil {
		t.Fatal(err)
	}
	// A finish under a stale claim changes nothing.
	if err := o.FinishEvent(ctx(), now, outbox.Result{EventID: "evt_a_1", Claim: "stale", State: outbox.StateDelivered, Attempts: 9}); err != nil {
		t.Fatal(err)
	}
	p2, _ := o.ClaimEvents(ctx(), now, lease, "c3", 10)
	if len(p2) != 1 || p2[0].ID != "evt_b_2" {
		t.Fatalf("claim after b1 = %+v, want only b2 (a1 waits for its retry, a2 behind it)", p2)
	}
	e.clk.Advance(time.Minute)
	now2 := e.clk.Now()
	p3, _ := o.ClaimEvents(ctx(), now2, now2.Add(time.Minute), "c4", 10)
	// a1 at its retry, with its attempt and done target; b2 because its
	// lease (c3, as if that dispatcher died) ran out.
	if len(p3) != 2 || p3[0].ID != "evt_a_1" || p3[0].Attempts != 1 || !slices.Equal(p3[0].Done, []string{"we_x"}) || p3[1].ID != "evt_b_2" {
		t.Fatalf("claim at the retry = %+v, want a1 (1 attempt, we_x done) and b2", p3)
	}
	log, err := o.WebhookDeliveries(ctx(), "a", 10)
	if err != nil || len(log) != 1 || log[0].StatusCode != 500 || log[0].EndpointID != "we_y" {
		t.Fatalf("delivery log = %+v, %v", log, err)
	}
	// Prune: b1 is delivered; at retention it goes, the pending ones stay.
	if err := o.FinishEvent(ctx(), e.clk.Now(), outbox.Result{EventID: "evt_a_1", Claim: "c4", State: outbox.StateDelivered, Attempts: 2}); err != nil {
		t.Fatal(err)
	}
	n, err := o.PruneEvents(ctx(), e.clk.Now().Add(time.Hour), 1)
	if err != nil || n != 2 { // one event, one log row (limit 1 each)
		t.Fatalf("PruneEvents = %d, %v; want 2", n, err)
	}
	n, _ = o.PruneEvents(ctx(), e.clk.Now().Add(time.Hour), 100)
	if n != 1 {
		t.Fatalf("second prune = %d, want 1 (the other delivered event)", n)
	}
	p5, _ := o.ClaimEvents(ctx(), e.clk.Now().Add(2*time.Minute), e.clk.Now().Add(3*time.Minute), "c6", 10)
	if len(p5) != 2 {
		t.Fatalf("pending events after pruning = %+v, want a2 and b2", p5)
	}
}

func testEventConcurrentDispatch(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	o := outboxOf(t, e.st)
	const accounts, per = 6, 12
	var all []events.Event
	for i := range per {
		for a := range accounts {
			all = append(all, events.Event{ID: fmt.Sprintf("evt_%d_%03d", a, i), Type: events.KeyCreated,
				AccountID: fmt.Sprintf("acct_%d", a), Time: e.clk.Now(), Data: json.RawMessage(`{}`)})
		}
	}
	if err := o.AppendEvents(ctx(), all); err != nil {
		t.Fatal(err)
	}
	c := &collector{}
	var wg sync.WaitGroup
	for range 3 {
		d := e.dispatcher(t, c, outbox.Options{Batch: 4, Workers: 2})
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 500 {
				if _, err := d.RunOnce(ctx()); err != nil {
					t.Error(err)
					return
				}
				c.mu.Lock()
				n := len(c.seen)
				c.mu.Unlock()
				if n >= len(all) {
					return
				}
			}
		}()
	}
	wg.Wait()
	if len(c.seen) != len(all) {
		t.Fatalf("%d of %d events delivered", len(c.seen), len(all))
	}
	last := map[string]string{}
	for _, ev := range c.seen {
		if ev.ID <= last[ev.AccountID] {
			t.Fatalf("account %s: %s delivered after %s", ev.AccountID, ev.ID, last[ev.AccountID])
		}
		last[ev.AccountID] = ev.ID
	}
}

// Concurrent debits that together cross thresholds write each crossing
// exactly once: no lost event, no duplicate (the crossing is decided on
// the state inside the transaction that makes it).
func testEventConcurrentCrossing(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	a := mustCreate(t, e.acc, account.CreateParams{Name: "C", Email: "conc@example.com"})
	svc := e.ledger(t, nil)
	openLedger(t, svc, a.ID, credits.Policy{MonthlyCap: amt(t, "100")})
	if _, err := e.eventsService().SetAlertThresholds(ctx(), a.ID, []decimal.Decimal{decimal.NewFromInt(75), decimal.NewFromInt(30)}); err != nil {
		t.Fatal(err)
	}
	mustCredit(t, svc.Grant, credits.CreditParams{AccountID: a.ID, Amount: amt(t, "100"), IdempotencyKey: "g"})
	var wg sync.WaitGroup
	for i := range 25 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := svc.Debit(ctx(), credits.DebitParams{AccountID: a.ID, Amount: amt(t, "4"), IdempotencyKey: fmt.Sprintf("c%d", i)})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	wantBalance(t, svc, a.ID, "0")
	c := &collector{}
	drain(t, e.dispatcher(t, c, outbox.Options{}))
	count := map[events.Type]int{}
	for _, ty := range c.types(a.ID) {
		count[ty]++
	}
	want := map[events.Type]int{events.BalanceLow: 2, events.BudgetThreshold: 3, events.MonthlyCapReached: 1}
	if fmt.Sprint(count) != fmt.Sprint(want) {
		t.Fatalf("events %v, want %v", count, want)
	}
}
