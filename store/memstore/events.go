package memstore

import (
	"context"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/shopspring/decimal"

	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits/ledger"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/internal/id"
	"github.com/keyledger/keyledger/internal/outbox"
)

var _ outbox.Store = (*db)(nil)

// outboxData is the event outbox, webhook endpoints, thresholds and the
// delivery log. Its lock is taken last: inside an account's ledger lock
// or keyMu, so that an event is written with the change that causes it,
// and nothing holding it takes another lock.
type outboxData struct {
	mu         sync.Mutex
	ids        *id.Generator
	seq        int64
	all        []*obEvent            // every event kept, by seq
	pending    map[string][]*obEvent // account -> its undelivered events, by seq
	endpoints  map[string][]events.Endpoint
	thresholds map[string][]decimal.Decimal
	log        []events.Delivery // oldest first
	notices    map[string]time.Time
}

type obEvent struct {
	e          events.Event
	seq        int64
	state      int
	attempts   int
	done       []string
	nextAt     time.Time
	leaseUntil time.Time
	claim      string
	finished   time.Time
}

func newOutbox() *outboxData {
	return &outboxData{
		ids: id.NewGenerator(nil), pending: make(map[string][]*obEvent),
		endpoints: make(map[string][]events.Endpoint), thresholds: make(map[string][]decimal.Decimal),
		notices: make(map[string]time.Time),
	}
}

// add appends an event; o.mu is held.
func (o *outboxData) add(e events.Event) {
	o.seq++
	e.Data = slices.Clone(e.Data)
	ev := &obEvent{e: e, seq: o.seq}
	o.all = append(o.all, ev)
	o.pending[e.AccountID] = append(o.pending[e.AccountID], ev)
}

// keyEvent writes a key event; called with keyMu held.
func (s *db) keyEvent(t events.Type, k apikey.APIKey, now time.Time) {
	if t == "" {
		return
	}
	o := s.outbox
	o.mu.Lock()
	o.add(outbox.KeyEvent(o.ids.New("evt_"), t, k, now))
	o.mu.Unlock()
}

// Moved implements ledger.Observer: the crossings of a ledger movement are
// written under the account's lock, with the entry.
func (t *memTx) Moved(_ context.Context, m ledger.Movement) error {
	o := t.l.outbox
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, e := range outbox.Crossings(m, o.thresholds[m.State.ID], func() string { return o.ids.New("evt_") }) {
		o.add(e)
	}
	return nil
}

// Moved implements ledger.Observer for a metered spend.
func (t *usageTx) Moved(ctx context.Context, m ledger.Movement) error {
	mt, err := t.bind()
	if err != nil {
		return err
	}
	return mt.Moved(ctx, m)
}

func (s *db) accountExists(id string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, ok := s.accounts[id]
	return ok
}

// CreateWebhookEndpoint implements events.Store.
func (s *db) CreateWebhookEndpoint(_ context.Context, e events.Endpoint, max int) error {
	if !s.accountExists(e.AccountID) {
		return events.ErrAccountNotFound
	}
	o := s.outbox
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.endpoints[e.AccountID]) >= max {
		return events.ErrTooManyEndpoints
	}
	o.endpoints[e.AccountID] = append(o.endpoints[e.AccountID], e)
	return nil
}

// WebhookEndpoints implements events.Store.
func (s *db) WebhookEndpoints(_ context.Context, accountID string) ([]events.Endpoint, error) {
	o := s.outbox
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.endpoints[accountID]), nil
}

// DeleteWebhookEndpoint implements events.Store.
func (s *db) DeleteWebhookEndpoint(_ context.Context, accountID, id string) error {
	o := s.outbox
	o.mu.Lock()
	defer o.mu.Unlock()
	eps := o.endpoints[accountID]
	i := slices.IndexFunc(eps, func(e events.Endpoint) bool { return e.ID == id })
	if i < 0 {
		return events.ErrNotFound
	}
	o.endpoints[accountID] = slices.Delete(slices.Clone(eps), i, i+1)
	return nil
}

// SetAlertThresholds implements events.Store.
func (s *db) SetAlertThresholds(_ context.Context, accountID string, low []decimal.Decimal) error {
	if !s.accountExists(accountID) {
		return events.ErrAccountNotFound
	}
	o := s.outbox
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(low) == 0 {
		delete(o.thresholds, accountID)
	} else {
		o.thresholds[accountID] = slices.Clone(low)
	}
	return nil
}

// AlertThresholds implements events.Store.
func (s *db) AlertThresholds(_ context.Context, accountID string) ([]decimal.Decimal, error) {
	o := s.outbox
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.thresholds[accountID]), nil
}

// WebhookDeliveries implements events.Store.
func (s *db) WebhookDeliveries(_ context.Context, accountID string, limit int) ([]events.Delivery, error) {
	o := s.outbox
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []events.Delivery
	for i := len(o.log) - 1; i >= 0 && len(out) < limit; i-- {
		if o.log[i].AccountID == accountID {
			out = append(out, o.log[i])
		}
	}
	return out, nil
}

// AppendEvents implements events.Store.
func (s *db) AppendEvents(_ context.Context, evs []events.Event) error {
	o := s.outbox
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, e := range evs {
		o.add(e)
	}
	return nil
}

// ClaimEvents implements outbox.Store.
func (s *db) ClaimEvents(_ context.Context, now, leaseUntil time.Time, claim string, limit int) ([]outbox.Pending, error) {
	o := s.outbox
	o.mu.Lock()
	defer o.mu.Unlock()
	var heads []*obEvent
	for _, q := range o.pending {
		if h := q[0]; !h.nextAt.After(now) && !h.leaseUntil.After(now) {
			heads = append(heads, h)
		}
	}
	sort.Slice(heads, func(i, j int) bool { return heads[i].seq < heads[j].seq })
	if len(heads) > limit {
		heads = heads[:limit]
	}
	out := make([]outbox.Pending, len(heads))
	for i, h := range heads {
		h.leaseUntil, h.claim = leaseUntil, claim
		e := h.e
		e.Data = slices.Clone(e.Data)
		out[i] = outbox.Pending{Event: e, Attempts: h.attempts, Done: slices.Clone(h.done), Claim: claim}
	}
	return out, nil
}

// FinishEvent implements outbox.Store.
func (s *db) FinishEvent(_ context.Context, now time.Time, r outbox.Result) error {
	o := s.outbox
	o.mu.Lock()
	defer o.mu.Unlock()
	var h *obEvent
	for _, q := range o.pending {
		if q[0].e.ID == r.EventID {
			h = q[0]
			break
		}
	}
	if h == nil || h.claim == "" || h.claim != r.Claim {
		return nil
	}
	h.attempts, h.done, h.nextAt, h.leaseUntil, h.claim = r.Attempts, slices.Clone(r.Done), r.NextAt, time.Time{}, ""
	o.log = append(o.log, r.Log...)
	if r.State != outbox.StatePending {
		h.state, h.finished = r.State, now
		q := o.pending[h.e.AccountID][1:]
		if len(q) == 0 {
			delete(o.pending, h.e.AccountID)
		} else {
			o.pending[h.e.AccountID] = q
		}
	}
	return nil
}

// PruneEvents implements outbox.Store.
func (s *db) PruneEvents(_ context.Context, before time.Time, limit int) (int, error) {
	o := s.outbox
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	o.all = slices.DeleteFunc(o.all, func(e *obEvent) bool {
		if n < limit && e.state != outbox.StatePending && e.finished.Before(before) {
			n++
			return true
		}
		return false
	})
	k := 0
	for k < len(o.log) && k < limit && o.log[k].At.Before(before) {
		k++
	}
	o.log = slices.Clone(o.log[k:])
	return n + k, nil
}

// NoticeExpiringKeys implements outbox.Store.
func (s *db) NoticeExpiringKeys(_ context.Context, now, until time.Time, limit int) (int, error) {
	s.keyMu.RLock()
	defer s.keyMu.RUnlock()
	o := s.outbox
	o.mu.Lock()
	defer o.mu.Unlock()
	ids := make([]string, 0)
	for id, r := range s.keys {
		k := &r.k
		if k.Status == apikey.StatusActive && !k.ExpiresAt.IsZero() && k.ExpiresAt.After(now) &&
			!k.ExpiresAt.After(until) && !o.notices[id].Equal(k.ExpiresAt) {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	if len(ids) > limit {
		ids = ids[:limit]
	}
	for _, id := range ids {
		k := s.keys[id].k
		o.notices[id] = k.ExpiresAt
		o.add(outbox.KeyEvent(o.ids.New("evt_"), events.KeyExpiring, k, now))
	}
	return len(ids), nil
}
