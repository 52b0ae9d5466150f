// Package storewrap is the forwarding base of the store.Store wrappers
// (store/storefault, store/storeotel): the wrapped store, embedded so that
// what a wrapper does not override (Close) passes through, and the
// optional capabilities the services look for, forwarded as the wrapped
// store has them, so that the services take the same paths over a wrapper
// as over the store itself.
package storewrap

import (
	"context"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/store"
)

// Base is embedded by a wrapper; its Store field is the wrapped store.
type Base struct {
	store.Store
}

// Inner returns the wrapped store.
func (b Base) Inner() store.Store { return b.Store }

// GroupCommit reports the credits group-commit capability (see
// credits.Store) of the wrapped store.
func (b Base) GroupCommit() bool {
	gc, ok := b.Store.(interface{ GroupCommit() bool })
	return ok && gc.GroupCommit()
}

// UsageGroupCommit reports the usage group-commit capability (see
// usage.Store) of the wrapped store.
func (b Base) UsageGroupCommit() bool {
	gc, ok := b.Store.(interface{ UsageGroupCommit() bool })
	return ok && gc.UsageGroupCommit()
}

// WatchKeyChanges implements apikey.ChangeNotifier with the wrapped
// store's notifications; over a store that has none it reports nothing.
func (b Base) WatchKeyChanges(fn func(apikey.Change)) (stop func()) {
	if cn, ok := b.Store.(apikey.ChangeNotifier); ok {
		return cn.WatchKeyChanges(fn)
	}
	return func() {}
}

// ProcessHolds reports the wrapped store's process holds (see
// sqlitestore.Options.ProcessHolds).
func (b Base) ProcessHolds() bool {
	p, ok := b.Store.(interface{ ProcessHolds() bool })
	return ok && p.ProcessHolds()
}

// LeasedHolds reports the wrapped store's leased holds (see
// pgstore.Options.LeasedHolds).
func (b Base) LeasedHolds() bool {
	p, ok := b.Store.(interface{ LeasedHolds() bool })
	return ok && p.LeasedHolds()
}

// Shared forwards to the wrapped store, which has it if it has process
// holds; otherwise the value is the wrapper's caller's alone.
func (b Base) Shared(key any, mk func() any) any {
	if sh, ok := b.Store.(interface{ Shared(any, func() any) any }); ok {
		return sh.Shared(key, mk)
	}
	return mk()
}

// LedgerReserveKey forwards to the wrapped store (process holds need it).
func (b Base) LedgerReserveKey(ctx context.Context, accountID, key string) ([32]byte, string, bool, error) {
	if l, ok := b.Store.(interface {
		LedgerReserveKey(context.Context, string, string) ([32]byte, string, bool, error)
	}); ok {
		return l.LedgerReserveKey(ctx, accountID, key)
	}
	return [32]byte{}, "", false, nil
}
