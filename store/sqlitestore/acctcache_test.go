package sqlitestore

import (
	"testing"
	"time"

	"github.com/keyledger/keyledger/credits/ledger"
)

// TestAcctCacheOnlyServesConfirmedStates walks the cache's protocol: states
// put by a committing batch are not served until confirmed, a batch that
// never confirms takes its accounts out for good, and writes of other
// paths (clear) drop everything, including late confirmations.
func TestAcctCacheOnlyServesConfirmedStates(t *testing.T) {
	now := time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)
	snap := func(id string, v int64) acctSnap {
		return acctSnap{st: ledger.AccountState{ID: id, Version: v}}
	}
	version := func(c *acctCache, id string) int64 {
		l, ok := c.get(id, now)
		if !ok {
			return -1
		}
		return l.St.Version
	}
	var c acctCache
	g := c.begin()
	tok := c.put(g, []acctSnap{snap("a", 1), snap("b", 1)})
	if version(&c, "a") != -1 {
		t.Fatal("served a state before its batch committed")
	}
	c.confirm(tok)
	if version(&c, "a") != 1 || version(&c, "b") != 1 {
		t.Fatal("confirmed states not served")
	}

	// Batch X puts a@2 and never confirms (its commit failed); batch Y
	// puts b@2 and confirms. a must not come back at version 1.
	c.put(c.begin(), []acctSnap{snap("a", 2)})
	tokY := c.put(c.begin(), []acctSnap{snap("b", 2)})
	c.confirm(tokY)
	if version(&c, "a") != -1 || version(&c, "b") != 2 {
		t.Fatalf("after an unconfirmed batch: a %d, b %d", version(&c, "a"), version(&c, "b"))
	}

	// Another write path clears; a batch that began before it confirms
	// nothing.
	g = c.begin()
	c.clear()
	tok = c.put(g, []acctSnap{snap("c", 1)})
	c.confirm(tok)
	if version(&c, "b") != -1 || version(&c, "c") != -1 {
		t.Fatal("states survived a clear, or a batch from before it was cached")
	}

	// An account with an active hold due is never served.
	due := acctSnap{st: ledger.AccountState{ID: "d", Version: 1}, holdDue: now.UnixNano()}
	c.confirm(c.put(c.begin(), []acctSnap{due}))
	if version(&c, "d") != -1 {
		t.Fatal("served an account with a hold due")
	}
}
