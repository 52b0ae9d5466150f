package store

// Backend is an opened backend as its constructor returns it
// (sqlitestore.Open, pgstore.Open, memstore.New) and as keyledger.New takes
// it. A backend's exported type shows only Close and the capabilities it
// documents: its operations are the Store contract, which enforces no
// domain rule (no funds check outside the ledger rules, no scopes, no
// audit), so a host reaches them through keyledger's services. Driver
// opens them for a domain service used alone, the conformance suite, store
// decorators and backend tools.
//
// Only Wrap, or a type embedding a Backend, implements Backend: a backend
// written outside this module implements Store and hands Wrap(its store)
// to keyledger.New.
type Backend interface {
	// Close releases the backend's resources.
	Close() error
	driver() Store
}

// Wrap returns d as a Backend whose Close is d's; Wrap(nil) is nil.
func Wrap(d Store) Backend {
	if d == nil {
		return nil
	}
	return wrapped{d}
}

// Driver returns b's operations: the Store contract, without the domain
// rules keyledger's services enforce over it. A domain service used alone
// takes it (apikey.NewService(store.Driver(b), nil)), and so do the
// conformance suite, store decorators (storefault) and backend tools; host
// code does not call its methods itself. b must be an opened backend.
func Driver(b Backend) Store { return b.driver() }

type wrapped struct{ d Store }

func (w wrapped) Close() error  { return w.d.Close() }
func (w wrapped) driver() Store { return w.d }
