package memstore

import (
	"context"
	"slices"
	"sort"
	"time"

	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/internal/outbox"
)

type keyRow struct {
	k       apikey.APIKey
	hash    [32]byte
	prev    [32]byte // valid while hasPrev
	hasPrev bool
}

// CreateAPIKey implements apikey.Store.
func (s *db) CreateAPIKey(_ context.Context, k apikey.APIKey, hash [32]byte) error {
	s.mu.RLock()
	_, ok := s.accounts[k.AccountID]
	s.mu.RUnlock()
	if !ok {
		return apikey.ErrAccountNotFound
	}
	s.keyMu.Lock()
	defer s.keyMu.Unlock()
	r := &keyRow{k: k.Clone(), hash: hash}
	s.keys[k.ID] = r
	s.keysByHash[hash] = r
	ids := s.keyIDs[k.AccountID]
	i, _ := slices.BinarySearch(ids, k.ID)
	s.keyIDs[k.AccountID] = slices.Insert(ids, i, k.ID)
	s.keyEvent(events.KeyCreated, k, k.CreatedAt)
	return nil
}

// row returns the key's row if it belongs to the account; keyMu is held.
func (s *db) row(accountID, keyID string) (*keyRow, error) {
	r, ok := s.keys[keyID]
	if !ok || r.k.AccountID != accountID {
		return nil, apikey.ErrNotFound
	}
	return r, nil
}

// APIKey implements apikey.Store.
func (s *db) APIKey(_ context.Context, accountID, keyID string) (apikey.APIKey, error) {
	s.keyMu.RLock()
	defer s.keyMu.RUnlock()
	r, err := s.row(accountID, keyID)
	if err != nil {
		return apikey.APIKey{}, err
	}
	return r.k.Clone(), nil
}

// ListAPIKeys implements apikey.Store.
func (s *db) ListAPIKeys(_ context.Context, accountID, afterID string, limit int) ([]apikey.APIKey, error) {
	s.keyMu.RLock()
	defer s.keyMu.RUnlock()
	ids := s.keyIDs[accountID]
	ids = ids[sort.Search(len(ids), func(i int) bool { return ids[i] > afterID }):]
	if len(ids) > limit {
		ids = ids[:limit]
	}
	out := make([]apikey.APIKey, len(ids))
	for i, id := range ids {
		out[i] = s.keys[id].k.Clone()
	}
	return out, nil
}

// APIKeyByHash implements apikey.Store.
func (s *db) APIKeyByHash(_ context.Context, hash [32]byte) (apikey.Match, error) {
	s.keyMu.RLock()
	r, ok := s.keysByHash[hash]
	var m apikey.Match
	if ok {
		m = apikey.Match{Key: r.k.Clone(), Previous: r.hash != hash}
	}
	s.keyMu.RUnlock()
	if !ok {
		return apikey.Match{}, apikey.ErrNotFound
	}
	s.mu.RLock()
	if a, ok := s.accounts[m.Key.AccountID]; ok {
		m.AccountPlan, m.AccountStatus = a.a.Plan, string(a.a.Status)
	}
	s.mu.RUnlock()
	return m, nil
}

// UpdateAPIKey implements apikey.Store.
func (s *db) UpdateAPIKey(_ context.Context, accountID, keyID string, u apikey.Update, now time.Time) (apikey.APIKey, error) {
	s.keyMu.Lock()
	defer s.keyMu.Unlock()
	r, err := s.row(accountID, keyID)
	if err != nil {
		return apikey.APIKey{}, err
	}
	old := r.k
	r.k = u.Apply(r.k, now)
	s.keyEvent(outbox.UpdateEvent(old, r.k), r.k, now)
	if r.k.GraceUntil.IsZero() && r.hasPrev {
		delete(s.keysByHash, r.prev)
		r.hasPrev = false
	}
	return r.k.Clone(), nil
}

// RotateAPIKey implements apikey.Store.
func (s *db) RotateAPIKey(_ context.Context, accountID, keyID string, rot apikey.Rotation, now time.Time) (apikey.APIKey, error) {
	s.keyMu.Lock()
	defer s.keyMu.Unlock()
	r, err := s.row(accountID, keyID)
	if err != nil {
		return apikey.APIKey{}, err
	}
	k, err := rot.Apply(r.k, now)
	if err != nil {
		return apikey.APIKey{}, err
	}
	if r.hasPrev {
		delete(s.keysByHash, r.prev)
	}
	r.prev, r.hasPrev = r.hash, !rot.GraceUntil.IsZero()
	if !r.hasPrev {
		delete(s.keysByHash, r.hash)
	}
	r.hash = rot.Hash
	s.keysByHash[rot.Hash] = r
	r.k = k
	s.keyEvent(events.KeyRotated, k, now)
	return k.Clone(), nil
}

// TouchAPIKeys implements apikey.Store.
func (s *db) TouchAPIKeys(_ context.Context, uses []apikey.Use) error {
	s.keyMu.Lock()
	defer s.keyMu.Unlock()
	for _, u := range uses {
		if r, ok := s.keys[u.KeyID]; ok && u.At.After(r.k.LastUsedAt) {
			r.k.LastUsedAt = u.At
		}
	}
	return nil
}
