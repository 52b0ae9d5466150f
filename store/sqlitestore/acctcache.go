package sqlitestore

import (
	"context"
	"database/sql"
	"sync"
	"time"

	"github.com/shopspring/decimal"

	"github.com/keyledger/keyledger/credits/ledger"
	"github.com/keyledger/keyledger/internal/sqlledger"
)

// acctCache keeps the ledger account states that spend and meter batches
// committed, so that the next batch on the same accounts does not read them
// again (reading ~11 account rows was a fifth of the writer's time in a
// debit batch). It is only ever a shortcut:
//
//   - Another process's commit changes PRAGMA data_version, which every
//     cached batch reads first; a change empties the cache.
//   - Every other write path of this process that touches ledger accounts
//     empties it before and after its transaction, and a batch only
//     stores its states if no such write started since it began (gen).
//   - A batch's states enter the cache only once its commit succeeded; its
//     accounts are out of the cache from before its commit (see put).
//   - A stale state cannot commit anyway: account rows are updated only
//     where their version is still the one read, and a batch that fails for
//     any reason empties the cache before it is retried (errStale).
//   - An account with an active hold due by the batch's time is loaded from
//     the table, which finds the due holds.
//   - It holds at most maxCachedAccounts states; past that it starts over.
type acctCache struct {
	mu   sync.Mutex
	gen  uint64
	dv   int64               // data_version the snapshots belong to
	accs map[string]acctSnap // committed states only
	// pend are the states of the batch that is committing (tok), moved to
	// accs once its commit succeeded; their accounts are out of accs
	// meanwhile.
	pend []acctSnap
	tok  uint64
	// low caches accounts' alert thresholds (their stored text) for the
	// batches' ledger events, under the same rules as accs: emptied with
	// it (clear, a data_version change), and a value read by a batch is
	// kept only if no other write path started since the batch began.
	// SetAlertThresholds drops the account's entry before and after its
	// write.
	low map[string]string
}

// maxCachedAccounts bounds the cache (a state is a few hundred bytes).
const maxCachedAccounts = 100_000

// acctSnap is an account as committed: its state (a private copy) and the
// stored lower bound of its active hold deadlines.
type acctSnap struct {
	st      ledger.AccountState
	holdDue int64
}

// begin returns the generation a batch starts in.
func (c *acctCache) begin() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// clear empties the cache and starts a new generation.
func (c *acctCache) clear() {
	c.mu.Lock()
	c.accs, c.pend, c.low = nil, nil, nil
	c.gen++
	c.mu.Unlock()
}

// check empties the cache if another connection committed since the
// snapshots were taken. It runs inside the batch's write transaction.
func (c *acctCache) check(b *binder) error {
	var dv int64
	if err := b.tx.QueryRowContext(b.ctx, `PRAGMA data_version`).Scan(&dv); err != nil {
		return wrap("read data_version", err)
	}
	c.mu.Lock()
	if dv != c.dv {
		c.accs, c.pend, c.low, c.dv = nil, nil, nil, dv
		c.gen++
	}
	c.mu.Unlock()
	return nil
}

// get returns a copy of id's committed state if it is cached and has no
// active hold due by now.
func (c *acctCache) get(id string, now time.Time) (sqlledger.Loaded, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.accs[id]
	if !ok || (s.holdDue != 0 && s.holdDue <= toNanos(now)) {
		return sqlledger.Loaded{}, false
	}
	return sqlledger.Loaded{St: s.st.Clone(), HoldDue: s.holdDue, HoldDue0: s.holdDue}, true
}

// thresholds returns acct's cached alert thresholds.
func (c *acctCache) thresholds(acct string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.low[acct]
	return v, ok
}

// keepThresholds caches acct's thresholds v, read by a batch that began
// in gen, unless another write path started since.
func (c *acctCache) keepThresholds(gen uint64, acct, v string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return
	}
	if c.low == nil || len(c.low) > maxCachedAccounts {
		c.low = make(map[string]string)
	}
	c.low[acct] = v
}

// snapshots returns the committed form of every account of t, to store
// once t commits.
func snapshots(t *sqlledger.Tx) []acctSnap {
	out := make([]acctSnap, 0, len(t.Order))
	for _, a := range t.Order {
		out = append(out, acctSnap{st: a.St.Clone(), holdDue: a.HoldDue})
	}
	return out
}

// put records the states a batch that began in gen is about to commit,
// unless a write of another path started since; it returns the token that
// confirms them. Until then their accounts are out of the cache, and so
// are those of a batch that put states but never confirmed them.
func (c *acctCache) put(gen uint64, snaps []acctSnap) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.pend {
		delete(c.accs, s.st.ID)
	}
	for _, s := range snaps {
		delete(c.accs, s.st.ID)
	}
	c.pend, c.tok = nil, c.tok+1
	if gen == c.gen {
		c.pend = snaps
	}
	return c.tok
}

// confirm moves the states put under tok into the cache: their batch
// committed.
func (c *acctCache) confirm(tok uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if tok != c.tok || c.pend == nil {
		return
	}
	if c.accs == nil || len(c.accs) > maxCachedAccounts {
		c.accs = make(map[string]acctSnap, len(c.pend))
	}
	for _, s := range c.pend {
		c.accs[s.st.ID] = s
	}
	c.pend = nil
}

// cachedWrite is db.write for a batch that starts from cached account
// states: fn builds the batch's ledgerTx (it calls useCache on it) and
// returns it once flushed. Its states are put while the batch still holds
// the only write connection, which takes their accounts out of the cache,
// so that no later batch can start from the states before; they are
// confirmed into the cache once the commit succeeded, and the cache is
// emptied if it failed.
func (s *db) cachedWrite(ctx context.Context, op string, fn func(tx *sql.Tx, gen uint64) (*sqlledger.Tx, error)) error {
	gen := s.accts.begin()
	var tok uint64
	err := s.write(ctx, op, func(tx *sql.Tx) error {
		lt, err := fn(tx, gen)
		if err == nil {
			tok = s.accts.put(gen, snapshots(lt))
		}
		return err
	})
	if err != nil {
		s.accts.clear()
		return err
	}
	s.accts.confirm(tok)
	return nil
}

// useCache makes t start from the cache, after checking that no other
// connection has committed since its snapshots were taken.
func (s *db) useCache(t *sqlledger.Tx, b *binder) error {
	t.Cached = s.accts.get
	return s.accts.check(b)
}

// forgetThresholds drops acct's cached thresholds. A batch that read the
// old ones ran its transaction before the change's write (one writer), so
// dropping them again once that write committed leaves none behind.
func (c *acctCache) forgetThresholds(acct string) {
	c.mu.Lock()
	delete(c.low, acct)
	c.mu.Unlock()
}

// SetAlertThresholds implements events.Store, dropping the account's
// cached thresholds before and after the write (only that account's: a
// tenant changing thresholds in a loop does not empty the cache of
// everyone's account states).
func (s *db) SetAlertThresholds(ctx context.Context, accountID string, low []decimal.Decimal) error {
	s.accts.forgetThresholds(accountID)
	defer s.accts.forgetThresholds(accountID)
	return s.Events.SetAlertThresholds(ctx, accountID, low)
}

// ledgerWrite is db.write for the paths other than spend batches that
// change ledger accounts: it empties the account cache before and after.
func (s *db) ledgerWrite(ctx context.Context, op string, fn func(*sql.Tx) error) error {
	s.accts.clear()
	defer s.accts.clear()
	return s.write(ctx, op, fn)
}
