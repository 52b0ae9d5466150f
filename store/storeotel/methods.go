package storeotel

import (
	"context"
	"time"

	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/usage"
)

// account.Store

// CreateAccount implements account.Store.
func (s *Store) CreateAccount(ctx context.Context, a account.Account, passwordHash string) error {
	ctx, c := s.begin(ctx, opCreateAccount, accountAttr(a.ID))
	err := s.Store.CreateAccount(ctx, a, passwordHash)
	c.end(ctx, err)
	return err
}

// Account implements account.Store.
func (s *Store) Account(ctx context.Context, id string) (account.Account, error) {
	ctx, c := s.begin(ctx, opAccount, accountAttr(id))
	a, err := s.Store.Account(ctx, id)
	c.end(ctx, err)
	return a, err
}

// AccountByEmail implements account.Store. The email is not recorded.
func (s *Store) AccountByEmail(ctx context.Context, email string) (account.Account, error) {
	ctx, c := s.begin(ctx, opAccountByEmail)
	a, err := s.Store.AccountByEmail(ctx, email)
	c.end(ctx, err)
	return a, err
}

// UpdateAccount implements account.Store.
func (s *Store) UpdateAccount(ctx context.Context, id string, u account.Update, now time.Time) (account.Account, error) {
	ctx, c := s.begin(ctx, opUpdateAccount, accountAttr(id))
	a, err := s.Store.UpdateAccount(ctx, id, u, now)
	c.end(ctx, err)
	return a, err
}

// ListAccounts implements account.Store.
func (s *Store) ListAccounts(ctx context.Context, afterID string, limit int) ([]account.Account, error) {
	ctx, c := s.begin(ctx, opListAccounts)
	as, err := s.Store.ListAccounts(ctx, afterID, limit)
	c.end(ctx, err)
	return as, err
}

// PasswordHash implements account.Store. The hash is not recorded.
func (s *Store) PasswordHash(ctx context.Context, id string) (string, error) {
	ctx, c := s.begin(ctx, opPasswordHash, accountAttr(id))
	h, err := s.Store.PasswordHash(ctx, id)
	c.end(ctx, err)
	return h, err
}

// SetPasswordHash implements account.Store. The hash is not recorded.
func (s *Store) SetPasswordHash(ctx context.Context, id, hash string, now time.Time) error {
	ctx, c := s.begin(ctx, opSetPasswordHash, accountAttr(id))
	err := s.Store.SetPasswordHash(ctx, id, hash, now)
	c.end(ctx, err)
	return err
}

// CreateSession implements account.Store. The token hash is not recorded.
func (s *Store) CreateSession(ctx context.Context, sess account.Session) error {
	ctx, c := s.begin(ctx, opCreateSession, accountAttr(sess.AccountID))
	err := s.Store.CreateSession(ctx, sess)
	c.end(ctx, err)
	return err
}

// Session implements account.Store. The token hash is not recorded.
func (s *Store) Session(ctx context.Context, tokenHash [32]byte) (account.Session, error) {
	ctx, c := s.begin(ctx, opSession)
	sess, err := s.Store.Session(ctx, tokenHash)
	c.end(ctx, err)
	return sess, err
}

// RevokeSession implements account.Store.
func (s *Store) RevokeSession(ctx context.Context, tokenHash [32]byte, at time.Time) error {
	ctx, c := s.begin(ctx, opRevokeSession)
	err := s.Store.RevokeSession(ctx, tokenHash, at)
	c.end(ctx, err)
	return err
}

// RevokeSessions implements account.Store.
func (s *Store) RevokeSessions(ctx context.Context, accountID string, at time.Time) (int, error) {
	ctx, c := s.begin(ctx, opRevokeSessions, accountAttr(accountID))
	n, err := s.Store.RevokeSessions(ctx, accountID, at)
	c.end(ctx, err)
	return n, err
}

// DeleteExpiredSessions implements account.Store.
func (s *Store) DeleteExpiredSessions(ctx context.Context, before time.Time) (int, error) {
	ctx, c := s.begin(ctx, opDeleteExpiredSessions)
	n, err := s.Store.DeleteExpiredSessions(ctx, before)
	c.end(ctx, err)
	return n, err
}

// apikey.Store

// CreateAPIKey implements apikey.Store. The hash is not recorded.
func (s *Store) CreateAPIKey(ctx context.Context, k apikey.APIKey, hash [32]byte) error {
	ctx, c := s.begin(ctx, opCreateAPIKey, accountAttr(k.AccountID), keyAttr(k.ID))
	err := s.Store.CreateAPIKey(ctx, k, hash)
	c.end(ctx, err)
	return err
}

// APIKey implements apikey.Store.
func (s *Store) APIKey(ctx context.Context, accountID, keyID string) (apikey.APIKey, error) {
	ctx, c := s.begin(ctx, opAPIKey, accountAttr(accountID), keyAttr(keyID))
	k, err := s.Store.APIKey(ctx, accountID, keyID)
	c.end(ctx, err)
	return k, err
}

// ListAPIKeys implements apikey.Store.
func (s *Store) ListAPIKeys(ctx context.Context, accountID, afterID string, limit int) ([]apikey.APIKey, error) {
	ctx, c := s.begin(ctx, opListAPIKeys, accountAttr(accountID))
	ks, err := s.Store.ListAPIKeys(ctx, accountID, afterID, limit)
	c.end(ctx, err)
	return ks, err
}

// APIKeyByHash implements apikey.Store: a verify cache miss. The hash is
// not recorded; the key found is.
func (s *Store) APIKeyByHash(ctx context.Context, hash [32]byte) (apikey.Match, error) {
	ctx, c := s.begin(ctx, opAPIKeyByHash)
	m, err := s.Store.APIKeyByHash(ctx, hash)
	if c.span != nil && err == nil {
		c.span.SetAttributes(accountAttr(m.Key.AccountID), keyAttr(m.Key.ID))
	}
	c.end(ctx, err)
	return m, err
}

// UpdateAPIKey implements apikey.Store.
func (s *Store) UpdateAPIKey(ctx context.Context, accountID, keyID string, u apikey.Update, now time.Time) (apikey.APIKey, error) {
	ctx, c := s.begin(ctx, opUpdateAPIKey, accountAttr(accountID), keyAttr(keyID))
	k, err := s.Store.UpdateAPIKey(ctx, accountID, keyID, u, now)
	c.end(ctx, err)
	return k, err
}

// RotateAPIKey implements apikey.Store.
func (s *Store) RotateAPIKey(ctx context.Context, accountID, keyID string, r apikey.Rotation, now time.Time) (apikey.APIKey, error) {
	ctx, c := s.begin(ctx, opRotateAPIKey, accountAttr(accountID), keyAttr(keyID))
	k, err := s.Store.RotateAPIKey(ctx, accountID, keyID, r, now)
	c.end(ctx, err)
	return k, err
}

// TouchAPIKeys implements apikey.Store.
func (s *Store) TouchAPIKeys(ctx context.Context, uses []apikey.Use) error {
	ctx, c := s.begin(ctx, opTouchAPIKeys)
	c.batched(ctx, len(uses))
	err := s.Store.TouchAPIKeys(ctx, uses)
	c.end(ctx, err)
	return err
}

// credits.Store

// OpenLedger implements credits.Store.
func (s *Store) OpenLedger(ctx context.Context, id, unit string, p credits.Policy, now time.Time) (credits.Account, error) {
	ctx, c := s.begin(ctx, opOpenLedger, accountAttr(id))
	a, err := s.Store.OpenLedger(ctx, id, unit, p, now)
	c.end(ctx, err)
	return a, err
}

// SetLedgerPolicy implements credits.Store.
func (s *Store) SetLedgerPolicy(ctx context.Context, accountID string, p credits.Policy, now time.Time) (credits.Account, error) {
	ctx, c := s.begin(ctx, opSetLedgerPolicy, accountAttr(accountID))
	st, err := s.Store.SetLedgerPolicy(ctx, accountID, p, now)
	c.end(ctx, err)
	return st, err
}

// SetKeyLimit implements credits.Store.
func (s *Store) SetKeyLimit(ctx context.Context, accountID, keyID string, limit credits.Amount, p credits.Period, now time.Time) (credits.KeySpend, error) {
	ctx, c := s.begin(ctx, opSetKeyLimit, accountAttr(accountID))
	ks, err := s.Store.SetKeyLimit(ctx, accountID, keyID, limit, p, now)
	c.end(ctx, err)
	return ks, err
}

// LedgerAccount implements credits.Store.
func (s *Store) LedgerAccount(ctx context.Context, accountID string, now time.Time) (credits.Account, error) {
	ctx, c := s.begin(ctx, opLedgerAccount, accountAttr(accountID))
	st, err := s.Store.LedgerAccount(ctx, accountID, now)
	c.end(ctx, err)
	return st, err
}

// LedgerCredit implements credits.Store. A new entry (not a replay) is
// counted in the ledger metrics.
func (s *Store) LedgerCredit(ctx context.Context, now time.Time, r credits.CreditRequest) (credits.Entry, error) {
	ctx, c := s.begin(ctx, opLedgerCredit, accountAttr(r.AccountID))
	e, err := s.Store.LedgerCredit(ctx, now, r)
	if err == nil && e.ID == r.EntryID {
		s.entry(ctx, &e, r.Unit)
	}
	c.end(ctx, err)
	return e, err
}

// LedgerEntries implements credits.Store.
func (s *Store) LedgerEntries(ctx context.Context, accountID string, f credits.EntryFilter, beforeSeq int64, limit int) ([]credits.Entry, error) {
	ctx, c := s.begin(ctx, opLedgerEntries, accountAttr(accountID))
	es, err := s.Store.LedgerEntries(ctx, accountID, f, beforeSeq, limit)
	c.end(ctx, err)
	return es, err
}

// LedgerBalanceAt implements credits.Store.
func (s *Store) LedgerBalanceAt(ctx context.Context, accountID string, t time.Time) (credits.Amount, error) {
	ctx, c := s.begin(ctx, opLedgerBalanceAt, accountAttr(accountID))
	a, err := s.Store.LedgerBalanceAt(ctx, accountID, t)
	c.end(ctx, err)
	return a, err
}

// ApplySpends implements credits.Store. The batch size is recorded, and
// every new debit entry (not a replay) is counted in the ledger metrics.
func (s *Store) ApplySpends(ctx context.Context, now time.Time, reqs []credits.SpendRequest, res []credits.SpendResult) error {
	ctx, c := s.begin(ctx, opApplySpends)
	c.batched(ctx, len(reqs))
	if c.span != nil && len(reqs) == 1 {
		c.span.SetAttributes(accountAttr(reqs[0].AccountID))
	}
	err := s.Store.ApplySpends(ctx, now, reqs, res)
	if err == nil && s.entries != nil {
		for i := range res {
			if e := &res[i].Entry; res[i].Err == nil && e.ID != "" && e.ID == reqs[i].EntryID {
				s.entry(ctx, e, reqs[i].Unit)
			}
		}
	}
	c.end(ctx, err)
	return err
}

// LedgerHold implements credits.Store.
func (s *Store) LedgerHold(ctx context.Context, holdID string) (credits.Hold, error) {
	ctx, c := s.begin(ctx, opLedgerHold)
	h, err := s.Store.LedgerHold(ctx, holdID)
	c.end(ctx, err)
	return h, err
}

// ExpireLedgers implements credits.Store. The expiry entries it writes are
// counted (their amounts are not reported by the store).
func (s *Store) ExpireLedgers(ctx context.Context, now time.Time, accountID string, limit int) (credits.ExpiryReport, error) {
	ctx, c := s.begin(ctx, opExpireLedgers)
	r, err := s.Store.ExpireLedgers(ctx, now, accountID, limit)
	if err == nil && r.Entries > 0 && s.entries != nil {
		s.entries.Add(ctx, int64(r.Entries), s.expiryAttrs())
	}
	c.end(ctx, err)
	return r, err
}

// usage.Store

// MeterUsage implements usage.Store. The batch size is recorded, and every
// new debit entry (not a replay) is counted in the ledger metrics.
func (s *Store) MeterUsage(ctx context.Context, now time.Time, reqs []usage.MeterRequest, res []usage.MeterOutcome) error {
	ctx, c := s.begin(ctx, opMeterUsage)
	c.batched(ctx, len(reqs))
	if c.span != nil && len(reqs) == 1 {
		c.span.SetAttributes(accountAttr(reqs[0].Record.AccountID), keyAttr(reqs[0].Record.KeyID))
	}
	err := s.Store.MeterUsage(ctx, now, reqs, res)
	if err == nil && s.entries != nil {
		for i := range res {
			if o := &res[i]; o.Err == nil && !o.Replayed && o.Entry.ID != "" {
				s.entry(ctx, &o.Entry, reqs[i].Spend.Unit)
			}
		}
	}
	c.end(ctx, err)
	return err
}

// UsageRecords implements usage.Store.
func (s *Store) UsageRecords(ctx context.Context, q usage.RecordQuery) ([]usage.Record, error) {
	ctx, c := s.begin(ctx, opUsageRecords, accountAttr(q.AccountID))
	rs, err := s.Store.UsageRecords(ctx, q)
	c.end(ctx, err)
	return rs, err
}

// ScanUsage implements usage.Store; the duration includes fn's.
func (s *Store) ScanUsage(ctx context.Context, q usage.RecordQuery, fn func(*usage.Record) error) error {
	ctx, c := s.begin(ctx, opScanUsage, accountAttr(q.AccountID))
	err := s.Store.ScanUsage(ctx, q, fn)
	c.end(ctx, err)
	return err
}

// UsageRollups implements usage.Store.
func (s *Store) UsageRollups(ctx context.Context, q usage.RollupQuery) ([]usage.Rollup, bool, error) {
	ctx, c := s.begin(ctx, opUsageRollups, accountAttr(q.AccountID))
	rs, other, err := s.Store.UsageRollups(ctx, q)
	c.end(ctx, err)
	return rs, other, err
}

// DeleteUsageBefore implements usage.Store.
func (s *Store) DeleteUsageBefore(ctx context.Context, t time.Time) (int, error) {
	ctx, c := s.begin(ctx, opDeleteUsageBefore)
	n, err := s.Store.DeleteUsageBefore(ctx, t)
	c.end(ctx, err)
	return n, err
}
