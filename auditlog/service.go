package auditlog

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/keyledger/keyledger/internal/id"
)

// DefaultRetention is how long entries are kept unless Options.Retention
// says otherwise: 400 days, a year and a month of slack for annual audits.
const DefaultRetention = 400 * 24 * time.Hour

// Options configure a Service. nil means defaults.
type Options struct {
	// Now is the clock (time.Now by default).
	Now func() time.Time
	// Logger receives unexpected failures (slog.Default if nil).
	Logger *slog.Logger
	// Retention is how long Prune keeps entries (DefaultRetention if 0).
	Retention time.Duration
	// PruneBatch is how many entries one Prune transaction deletes at most
	// (1,000 by default); PruneMaxBatches bounds the transactions of one
	// Prune call (100 by default), so one call never runs long: a host
	// calls Prune periodically (the gateway: hourly).
	PruneBatch, PruneMaxBatches int
}

// Service appends and reads audit entries. It is safe for concurrent use.
type Service struct {
	st             Store
	now            func() time.Time
	log            *slog.Logger
	ids            *id.Generator
	keep           time.Duration
	batch, batches int
}

// NewService returns the audit log over st.
func NewService(st Store, opts *Options) (*Service, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Retention == 0 {
		o.Retention = DefaultRetention
	}
	if o.PruneBatch == 0 {
		o.PruneBatch = 1000
	}
	if o.PruneMaxBatches == 0 {
		o.PruneMaxBatches = 100
	}
	if st == nil || o.Retention < 0 || o.PruneBatch < 0 || o.PruneMaxBatches < 0 {
		return nil, fmt.Errorf("%w: a store and non-negative retention and batches are required", ErrInvalidOptions)
	}
	return &Service{st: st, now: o.Now, log: o.Logger, ids: id.NewGenerator(o.Now), keep: o.Retention,
		batch: o.PruneBatch, batches: o.PruneMaxBatches}, nil
}

// Append records e. It fills what e leaves zero: ID, Time (the clock), the
// actor (the context's, see WithActor; else ActorSystem) and the client
// address and user agent (WithClient). It truncates the user agent and the
// changes' values, and returns ErrInvalidEntry for an entry without an
// account or action.
func (s *Service) Append(ctx context.Context, e Entry) (Entry, error) {
	if e.ID == "" {
		e.ID = s.ids.New("aud_")
	}
	if e.Time.IsZero() {
		e.Time = s.now()
	}
	e.Time = e.Time.UTC()
	if e.Actor.Kind == "" {
		if a, ok := ActorFrom(ctx); ok {
			e.Actor = a
		} else {
			e.Actor = Actor{Kind: ActorSystem}
		}
	}
	if e.ClientIP == "" && e.UserAgent == "" {
		e.ClientIP, e.UserAgent = ClientFrom(ctx)
	}
	e.UserAgent = Truncate(e.UserAgent, MaxUserAgentLen)
	if len(e.Changes) > 0 {
		cs := make([]Change, len(e.Changes))
		for i, c := range e.Changes {
			cs[i] = Change{Field: c.Field, Before: Truncate(c.Before, MaxValueLen), After: Truncate(c.After, MaxValueLen)}
		}
		e.Changes = cs
	}
	if err := e.Validate(); err != nil {
		return Entry{}, err
	}
	return s.st.AppendAudit(ctx, e)
}

// List returns a page of q.AccountID's entries, newest first. It returns
// ErrInvalidCursor for a cursor it did not issue and ErrInvalidQuery for a
// filter that cannot match.
func (s *Service) List(ctx context.Context, q Query) (Page, error) {
	before, err := decodeCursor(q.Cursor)
	if err != nil {
		return Page{}, err
	}
	if q.AccountID == "" || len(q.Action) > MaxActionLen || (q.Actor.Kind != "" && !q.Actor.Kind.valid()) ||
		!storable(q.AccountID, q.Action, q.Actor.ID) ||
		(q.Actor.Kind == "" && q.Actor.ID != "") ||
		(!q.Since.IsZero() && !q.Until.IsZero() && q.Until.Before(q.Since)) {
		return Page{}, ErrInvalidQuery
	}
	sq := StoreQuery{AccountID: q.AccountID, Action: q.Action, Actor: q.Actor, Since: q.Since, Until: q.Until,
		BeforeSeq: before, Limit: ClampLimit(q.Limit)}
	if p, ok := strings.CutSuffix(q.Action, ".*"); ok {
		sq.Action, sq.ActionPrefix = p+".", true
	}
	limit := sq.Limit
	sq.Limit++ // one more tells whether there is a next page
	entries, err := s.st.ListAudit(ctx, sq)
	if err != nil {
		return Page{}, err
	}
	p := Page{Entries: entries}
	if len(entries) > limit {
		p.Entries = entries[:limit]
		p.NextCursor = encodeCursor(p.Entries[limit-1].Seq)
	}
	if p.Entries == nil {
		p.Entries = []Entry{}
	}
	return p, nil
}

// Prune deletes entries older than the retention, in transactions of at
// most Options.PruneBatch entries and at most Options.PruneMaxBatches of
// them, and returns how many it deleted. Call it periodically; a call that
// hits the bound leaves the rest for the next.
func (s *Service) Prune(ctx context.Context) (int, error) {
	cutoff := s.now().Add(-s.keep)
	total := 0
	for range s.batches {
		n, err := s.st.PruneAudit(ctx, cutoff, s.batch)
		total += n
		if err != nil {
			return total, err
		}
		if n < s.batch {
			break
		}
	}
	return total, nil
}

// Retention is how long Prune keeps entries.
func (s *Service) Retention() time.Duration { return s.keep }

// Diff returns the changes between before and after, field by field, for
// the fields whose values differ: pairs of (field, before, after) in
// order. It is the helper the facade builds Changes with.
func Diff(fields ...[3]string) []Change {
	var cs []Change
	for _, f := range fields {
		if f[1] != f[2] {
			cs = append(cs, Change{Field: f[0], Before: f[1], After: f[2]})
		}
	}
	return cs
}
