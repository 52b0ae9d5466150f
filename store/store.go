// Package store defines store.Store, the composite of the narrow Store
// interfaces that keyledger's domain packages declare next to their code.
// A backend (store/memstore, store/sqlitestore, store/pgstore) implements
// Store and proves it with the conformance suite in store/storetest.
//
// The contract is atomic domain operations, not a generic transaction: every
// method does one complete, validated change (or read) so that each backend
// can implement it natively. Methods take a context first and report missing,
// duplicate and insufficient cases with the owning domain's sentinel errors
// (account.ErrNotFound, account.ErrEmailTaken, …), wrapped at most once with
// the operation name; other errors are system failures.
package store

import (
	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/auditlog"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/usage"
)

// Store is everything keyledger needs from a backend.
type Store interface {
	account.Store
	apikey.Store
	credits.Store
	usage.Store
	events.Store
	auditlog.Store

	// Close releases the backend's resources. Calls after Close fail.
	Close() error
}

// InMemory is an optional capability: a store whose operations never wait
// on I/O (store/memstore) reports true, and keyledger then skips the
// per-call timeouts (keyledger.Options.StoreTimeout) that bound a stalled
// database: they would cost allocations on every request and protect
// nothing.
type InMemory interface {
	InMemory() bool
}
