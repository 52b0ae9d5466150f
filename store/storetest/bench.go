package storetest

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/credits"
)

func benchVerifySession(b *testing.B, newStore NewStoreFunc, cached bool) {
	opts := &account.Options{}
	if !cached {
		opts.SessionCacheTTL = -1
	}
	e := newEnv(b, newStore, opts)
	mustCreate(b, e.acc, account.CreateParams{Name: "B", Email: "b@example.com", Password: "password1"})
	tok, _ := login(b, e.acc, "b@example.com", "password1")
	if _, err := e.acc.VerifySession(ctx(), tok); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.acc.VerifySession(ctx(), tok); err != nil {
			b.Fatal(err)
		}
	}
}

func benchGetAccount(b *testing.B, newStore NewStoreFunc) {
	e := newEnv(b, newStore, nil)
	a := mustCreate(b, e.acc, account.CreateParams{Name: "G", Email: "g@example.com", Metadata: map[string]string{"k": "v"}})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.acc.Get(ctx(), a.ID); err != nil {
			b.Fatal(err)
		}
	}
}

// benchLedger opens n funded INR accounts on a fresh store for a ledger
// benchmark; maxBatch 1 turns group commit off.
func benchLedger(b *testing.B, newStore NewStoreFunc, n, maxBatch int) (*credits.Service, []string) {
	st := newStore(b)
	b.Cleanup(func() { _ = st.Close() })
	svc, err := credits.NewService(st, &credits.Options{MaxBatch: maxBatch, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = svc.Close(context.Background()) })
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("acct_bench%03d", i)
		if _, err := svc.Open(ctx(), ids[i], credits.Policy{}); err != nil {
			b.Fatal(err)
		}
		if _, err := svc.Purchase(ctx(), credits.CreditParams{AccountID: ids[i], Amount: credits.AmountFromInt(1_000_000_000), IdempotencyKey: "funds"}); err != nil {
			b.Fatal(err)
		}
	}
	return svc, ids
}

// perTokenCost is the debit of the ledger benchmarks: one token at ₹12.50
// per million, exact.
func perTokenCost() credits.Amount { return credits.AmountFromMinor(125, 7) }

// BenchLedgerDebit measures Debit by one caller on one account.
func BenchLedgerDebit(b *testing.B, newStore NewStoreFunc) {
	svc, ids := benchLedger(b, newStore, 1, 0)
	cost := perTokenCost()
	key := make([]byte, 0, 32)
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		i++
		key = strconv.AppendInt(append(key[:0], "use_"...), int64(i), 10)
		if _, err := svc.Debit(ctx(), credits.DebitParams{AccountID: ids[0], Amount: cost, IdempotencyKey: string(key)}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchLedgerDebitParallel measures Debit with 32 × GOMAXPROCS callers in
// flight, caller i on account i mod accounts; maxBatch 1 is the naive one
// transaction per debit, 0 the default group commit (for stores that want
// it). It reports the mean group-commit batch.
func BenchLedgerDebitParallel(b *testing.B, newStore NewStoreFunc, accounts, maxBatch int) {
	svc, ids := benchLedger(b, newStore, accounts, maxBatch)
	cost := perTokenCost()
	var caller, seq atomic.Int64
	b.SetParallelism(32)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		acct := ids[int(caller.Add(1))%len(ids)]
		key := make([]byte, 0, 32)
		for pb.Next() {
			key = strconv.AppendInt(append(key[:0], "use_"...), seq.Add(1), 10)
			if _, err := svc.Debit(ctx(), credits.DebitParams{AccountID: acct, Amount: cost, IdempotencyKey: string(key)}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	if st := svc.Stats(); st.Batches > 0 {
		b.ReportMetric(float64(st.BatchedSpends)/float64(st.Batches), "spends/batch")
	}
}

// BenchLedgerReserveSettle measures one Reserve plus one Settle by one
// caller (two spends, two transactions on a durable store).
func BenchLedgerReserveSettle(b *testing.B, newStore NewStoreFunc) {
	svc, ids := benchLedger(b, newStore, 1, 0)
	est, actual := credits.AmountFromMinor(5, 2), perTokenCost()
	key := make([]byte, 0, 32)
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		i++
		key = strconv.AppendInt(append(key[:0], "req_"...), int64(i), 10)
		h, err := svc.Reserve(ctx(), credits.ReserveParams{AccountID: ids[0], Amount: est, TTL: time.Minute, IdempotencyKey: string(key)})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := svc.Settle(ctx(), credits.SettleParams{HoldID: h.ID, Actual: actual}); err != nil {
			b.Fatal(err)
		}
	}
}
