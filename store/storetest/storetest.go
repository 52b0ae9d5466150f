// Package storetest is the conformance suite and the shared benchmarks that
// every keyledger backend passes. A backend's test file is a harness:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t testing.TB) store.Store { return newStore(t) })
//	}
//
//	func BenchmarkStore(b *testing.B) { storetest.Bench(b, newStore) }
//
// The suite drives the backend through the domain services' public API with
// a fake clock, so it checks what users observe, not SQL. Each call of
// newStore must return a fresh, empty store; the suite closes it.
package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/internal/fakeclock"
	"github.com/keyledger/keyledger/store"
)

// NewStoreFunc returns a fresh, empty store for one test or benchmark.
type NewStoreFunc func(t testing.TB) store.Store

// Run runs the whole conformance suite against the backend.
func Run(t *testing.T, newStore NewStoreFunc) {
	t.Run("Accounts", func(t *testing.T) { runAccounts(t, newStore) })
	t.Run("Sessions", func(t *testing.T) { runSessions(t, newStore) })
	t.Run("Lifecycle", func(t *testing.T) { runLifecycle(t, newStore) })
	t.Run("APIKeys", func(t *testing.T) { runAPIKeys(t, newStore) })
	t.Run("KeyScopes", func(t *testing.T) { runKeyScopes(t, newStore) })
	t.Run("Credits", func(t *testing.T) { runCredits(t, newStore) })
	t.Run("KeyLimits", func(t *testing.T) { runKeyLimits(t, newStore) })
	t.Run("Usage", func(t *testing.T) { runUsage(t, newStore) })
	t.Run("Events", func(t *testing.T) { runEvents(t, newStore) })
	t.Run("Audit", func(t *testing.T) { runAudit(t, newStore) })
}

// Bench runs the shared benchmarks against the backend.
func Bench(b *testing.B, newStore NewStoreFunc) {
	b.Run("VerifySession", func(b *testing.B) { benchVerifySession(b, newStore, true) })
	b.Run("VerifySessionUncached", func(b *testing.B) { benchVerifySession(b, newStore, false) })
	b.Run("GetAccount", func(b *testing.B) { benchGetAccount(b, newStore) })
	b.Run("APIKeys", func(b *testing.B) { benchAPIKeys(b, newStore) })
	b.Run("Debit", func(b *testing.B) { BenchLedgerDebit(b, newStore) })
	b.Run("DebitParallel", func(b *testing.B) { BenchLedgerDebitParallel(b, newStore, 64, 0) })
	b.Run("ReserveSettle", func(b *testing.B) { BenchLedgerReserveSettle(b, newStore) })
	b.Run("Meter", func(b *testing.B) { BenchMeter(b, newStore) })
	b.Run("MeterParallel", func(b *testing.B) { BenchMeterParallel(b, newStore, 0, MeterCallers) })
	for _, n := range []int{0, OutboxBacklog} {
		b.Run(fmt.Sprintf("OutboxBacklog/queued=%d", n), func(b *testing.B) { BenchOutboxBacklog(b, newStore, n) })
	}
}

// epoch is where every suite clock starts.
var epoch = time.Date(2026, 3, 1, 9, 30, 0, 0, time.UTC)

// fastArgon keeps password hashing cheap in tests; production uses
// account.DefaultArgon2Params.
var fastArgon = account.Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1, KeyLen: 32, SaltLen: 16}

// env is one store with services on a fake clock.
type env struct {
	st  store.Store
	clk *fakeclock.Clock
	acc *account.Service
}

func newEnv(t testing.TB, newStore NewStoreFunc, opts *account.Options) *env {
	t.Helper()
	st := newStore(t)
	t.Cleanup(func() { _ = st.Close() })
	e := &env{st: st, clk: fakeclock.New(epoch)}
	e.acc = e.accounts(t, opts)
	return e
}

// accounts returns another account.Service over the same store and clock,
// standing in for a second process.
func (e *env) accounts(t testing.TB, opts *account.Options) *account.Service {
	t.Helper()
	var o account.Options
	if opts != nil {
		o = *opts
	}
	o.Now = e.clk.Now
	if o.Argon2 == (account.Argon2Params{}) {
		o.Argon2 = fastArgon
	}
	svc, err := account.NewService(e.st, &o)
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

// processHolds reports whether st lets the credits Service keep holds in
// its process (sqlitestore.Options.ProcessHolds). The suite then expects
// what DESIGN.md ("Process holds") documents: reserve idempotency keys
// live in the process, a released or expired hold is forgotten after a
// while, and the expiry sweep finds no stored holds to expire.
func processHolds(st any) bool {
	ph, ok := st.(interface{ ProcessHolds() bool })
	return ok && ph.ProcessHolds()
}
