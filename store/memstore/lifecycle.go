package memstore

import (
	"context"
	"time"

	"github.com/keyledger/keyledger/account"
)

// CreateToken implements account.LifecycleStore.
func (s *db) CreateToken(_ context.Context, t account.Token) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.accounts[t.AccountID]; !ok {
		return account.ErrNotFound
	}
	s.tokens[t.Hash] = t
	return nil
}

// ConsumeToken implements account.LifecycleStore.
func (s *db) ConsumeToken(_ context.Context, kind account.TokenKind, h [32]byte, at time.Time) (account.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.tokens[h]
	if !ok || t.Kind != kind {
		return account.Token{}, account.ErrTokenInvalid
	}
	delete(s.tokens, h)
	if !at.Before(t.ExpiresAt) {
		return account.Token{}, account.ErrTokenInvalid
	}
	return t, nil
}

// CloseAccount implements account.LifecycleStore.
func (s *db) CloseAccount(_ context.Context, id string, now time.Time) (account.Account, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.accounts[id]
	if !ok {
		return account.Account{}, account.ErrNotFound
	}
	if account.Scrubbed(r.a) {
		return r.a.Clone(), nil
	}
	s.closed[account.EmailHash(r.a.Email)] = struct{}{}
	delete(s.byEmail, r.a.Email)
	r.a = account.Scrub(r.a, now)
	r.hash = ""
	s.byEmail[r.a.Email] = id
	for h, sess := range s.sessions {
		if sess.AccountID == id && sess.RevokedAt.IsZero() {
			sess.RevokedAt = now
			s.sessions[h] = sess
		}
	}
	for h, t := range s.tokens {
		if t.AccountID == id {
			delete(s.tokens, h)
		}
	}
	return r.a.Clone(), nil
}

// EmailClosed implements account.LifecycleStore.
func (s *db) EmailClosed(_ context.Context, h [32]byte) (bool, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, ok := s.closed[h]
	return ok, nil
}
