// Package memstore is the in-memory keyledger backend: complete, fast, and
// gone when the process exits. Use it in tests and single-process programs
// that can lose their state. Values are copied in and out, so callers can
// never change stored state through a returned value.
package memstore

import (
	"context"
	"hash/maphash"
	"sort"
	"sync"
	"time"

	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/store"
)

var _ store.Store = (*db)(nil)

// db is the in-memory store.Store behind a Store.
type db struct {
	mu       sync.RWMutex
	accounts map[string]*accountRow
	byEmail  map[string]string // normalized email -> account ID
	sessions map[[32]byte]account.Session
	tokens   map[[32]byte]account.Token // one-time tokens (lifecycle.go)
	closed   map[[32]byte]struct{}      // EmailHash of closed accounts

	// API keys (apikey.go) have their own lock: verify misses do not
	// queue behind account writes. Never held together with mu.
	keyMu      sync.RWMutex
	keys       map[string]*keyRow
	keysByHash map[[32]byte]*keyRow // current and previous secrets
	keyIDs     map[string][]string  // account ID -> its key IDs, sorted
	ledger     *ledgers             // credits; locked separately (see credits.go)
	usage      *usageData           // usage; locked per account (see usage.go)
	outbox     *outboxData          // events (events.go); its lock is taken last
	audit      *auditData           // audit log; locked separately (see audit.go)
}

type accountRow struct {
	a    account.Account
	hash string
}

// Store is an in-memory backend, to pass to keyledger.New. The zero value
// is not usable; call New. Its operations — the store.Store contract,
// reached by keyledger's services (store.Driver opens them for tests) —
// are not methods of Store: they do not enforce the domain rules.
type Store struct {
	handle // store.Wrap of the *db: Close and the operations
}

type handle = store.Backend

var _ store.Backend = (*Store)(nil)

// New returns an empty Store.
func New() *Store { return &Store{handle: store.Wrap(newDB())} }

// Close implements store.Backend; the data stays readable in memory.
func (s *Store) Close() error { return nil }

func newDB() *db {
	s := &db{
		accounts: make(map[string]*accountRow),
		byEmail:  make(map[string]string),
		sessions: make(map[[32]byte]account.Session),
		tokens:   make(map[[32]byte]account.Token),
		closed:   make(map[[32]byte]struct{}),

		keys:       make(map[string]*keyRow),
		keysByHash: make(map[[32]byte]*keyRow),
		keyIDs:     make(map[string][]string),
		ledger:     newLedgers(),
		usage:      newUsageData(maphash.MakeSeed()),
		audit:      newAuditData(),
	}
	s.outbox = newOutbox()
	s.ledger.outbox = s.outbox
	return s
}

// Close implements store.Store; the data stays readable in memory.
func (s *db) Close() error { return nil }

// CreateAccount implements account.AccountStore.
func (s *db) CreateAccount(_ context.Context, a account.Account, hash string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.byEmail[a.Email]; ok {
		return account.ErrEmailTaken
	}
	s.accounts[a.ID] = &accountRow{a: a.Clone(), hash: hash}
	s.byEmail[a.Email] = a.ID
	return nil
}

// Account implements account.AccountStore.
func (s *db) Account(_ context.Context, id string) (account.Account, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, ok := s.accounts[id]
	if !ok {
		return account.Account{}, account.ErrNotFound
	}
	return r.a.Clone(), nil
}

// AccountByEmail implements account.AccountStore.
func (s *db) AccountByEmail(ctx context.Context, email string) (account.Account, error) {
	s.mu.RLock()
	id, ok := s.byEmail[email]
	s.mu.RUnlock()
	if !ok {
		return account.Account{}, account.ErrNotFound
	}
	return s.Account(ctx, id)
}

// UpdateAccount implements account.AccountStore.
func (s *db) UpdateAccount(_ context.Context, id string, u account.Update, now time.Time) (account.Account, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.accounts[id]
	if !ok {
		return account.Account{}, account.ErrNotFound
	}
	r.a = u.Apply(r.a, now)
	return r.a.Clone(), nil
}

// ListAccounts implements account.AccountStore.
func (s *db) ListAccounts(_ context.Context, afterID string, limit int) ([]account.Account, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ids := make([]string, 0, len(s.accounts))
	for id := range s.accounts {
		if id > afterID {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	if len(ids) > limit {
		ids = ids[:limit]
	}
	out := make([]account.Account, len(ids))
	for i, id := range ids {
		out[i] = s.accounts[id].a.Clone()
	}
	return out, nil
}

// PasswordHash implements account.AccountStore.
func (s *db) PasswordHash(_ context.Context, id string) (string, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, ok := s.accounts[id]
	if !ok {
		return "", account.ErrNotFound
	}
	return r.hash, nil
}

// SetPasswordHash implements account.AccountStore.
func (s *db) SetPasswordHash(_ context.Context, id, hash string, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.accounts[id]
	if !ok {
		return account.ErrNotFound
	}
	r.hash = hash
	r.a.UpdatedAt = now
	return nil
}

// CreateSession implements account.SessionStore.
func (s *db) CreateSession(_ context.Context, sess account.Session) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.accounts[sess.AccountID]; !ok {
		return account.ErrNotFound
	}
	s.sessions[sess.TokenHash] = sess
	return nil
}

// Session implements account.SessionStore.
func (s *db) Session(_ context.Context, h [32]byte) (account.Session, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	sess, ok := s.sessions[h]
	if !ok {
		return account.Session{}, account.ErrSessionInvalid
	}
	return sess, nil
}

// RevokeSession implements account.SessionStore.
func (s *db) RevokeSession(_ context.Context, h [32]byte, at time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	sess, ok := s.sessions[h]
	if !ok {
		return account.ErrSessionInvalid
	}
	if sess.RevokedAt.IsZero() {
		sess.RevokedAt = at
		s.sessions[h] = sess
	}
	return nil
}

// RevokeSessions implements account.SessionStore.
func (s *db) RevokeSessions(_ context.Context, accountID string, at time.Time) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for h, sess := range s.sessions {
		if sess.AccountID == accountID && sess.RevokedAt.IsZero() {
			sess.RevokedAt = at
			s.sessions[h] = sess
			n++
		}
	}
	return n, nil
}

// DeleteExpiredSessions implements account.SessionStore.
func (s *db) DeleteExpiredSessions(_ context.Context, before time.Time) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for h, sess := range s.sessions {
		if sess.ExpiresAt.Before(before) {
			delete(s.sessions, h)
			n++
		}
	}
	return n, nil
}

// InMemory implements store.InMemory: no operation waits on I/O, so
// keyledger does not bound its calls with timers.
func (s *db) InMemory() bool { return true }
