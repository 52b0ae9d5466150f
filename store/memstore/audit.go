package memstore

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/keyledger/keyledger/auditlog"
)

// auditData is the audit log: each account's entries in Seq order, under
// a lock of its own.
type auditData struct {
	mu    sync.Mutex
	seq   int64
	ids   map[string]struct{}
	byAcc map[string][]auditlog.Entry
}

func newAuditData() *auditData {
	return &auditData{ids: make(map[string]struct{}), byAcc: make(map[string][]auditlog.Entry)}
}

func cloneEntry(e auditlog.Entry) auditlog.Entry {
	e.Changes = slices.Clone(e.Changes)
	return e
}

// AppendAudit implements auditlog.Store.
func (s *db) AppendAudit(ctx context.Context, e auditlog.Entry) (auditlog.Entry, error) {
	if err := ctx.Err(); err != nil {
		return auditlog.Entry{}, err
	}
	a := s.audit
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, dup := a.ids[e.ID]; dup {
		return auditlog.Entry{}, auditlog.ErrDuplicateEntry
	}
	a.seq++
	e.Seq = a.seq
	e = cloneEntry(e)
	a.ids[e.ID] = struct{}{}
	a.byAcc[e.AccountID] = append(a.byAcc[e.AccountID], e)
	return cloneEntry(e), nil
}

func auditMatches(e *auditlog.Entry, q *auditlog.StoreQuery) bool {
	switch {
	case q.ActionPrefix && !strings.HasPrefix(e.Action, q.Action),
		!q.ActionPrefix && q.Action != "" && e.Action != q.Action,
		q.Actor.Kind != "" && e.Actor.Kind != q.Actor.Kind,
		q.Actor.ID != "" && e.Actor.ID != q.Actor.ID,
		!q.Since.IsZero() && e.Time.Before(q.Since),
		!q.Until.IsZero() && !e.Time.Before(q.Until):
		return false
	}
	return true
}

// ListAudit implements auditlog.Store.
func (s *db) ListAudit(ctx context.Context, q auditlog.StoreQuery) ([]auditlog.Entry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	a := s.audit
	a.mu.Lock()
	defer a.mu.Unlock()
	es := a.byAcc[q.AccountID]
	out := []auditlog.Entry{}
	for i := len(es) - 1; i >= 0 && len(out) < q.Limit; i-- {
		e := &es[i]
		if q.BeforeSeq > 0 && e.Seq >= q.BeforeSeq {
			continue
		}
		if auditMatches(e, &q) {
			out = append(out, cloneEntry(*e))
		}
	}
	return out, nil
}

// PruneAudit implements auditlog.Store.
func (s *db) PruneAudit(ctx context.Context, cutoff time.Time, limit int) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	a := s.audit
	a.mu.Lock()
	defer a.mu.Unlock()
	var old []int64 // Seqs due, oldest first after sorting
	for _, es := range a.byAcc {
		for i := range es {
			if es[i].Time.Before(cutoff) {
				old = append(old, es[i].Seq)
			}
		}
	}
	slices.Sort(old)
	if len(old) > limit {
		old = old[:limit]
	}
	if len(old) == 0 {
		return 0, nil
	}
	last := old[len(old)-1]
	for acc, es := range a.byAcc {
		kept := es[:0:0]
		for _, e := range es {
			if e.Seq <= last && e.Time.Before(cutoff) {
				if _, found := slices.BinarySearch(old, e.Seq); found {
					delete(a.ids, e.ID)
					continue
				}
			}
			kept = append(kept, e)
		}
		if len(kept) == 0 {
			delete(a.byAcc, acc)
		} else {
			a.byAcc[acc] = kept
		}
	}
	return len(old), nil
}
