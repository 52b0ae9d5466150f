package storetest

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/usage"
)

// benchMetering opens n funded INR accounts and a usage Service on a fresh
// store; maxBatch 1 turns group commit off (one transaction per record).
func benchMetering(b *testing.B, newStore NewStoreFunc, n, maxBatch int) (*usage.Service, []string) {
	st := newStore(b)
	b.Cleanup(func() { _ = st.Close() })
	discard := slog.New(slog.DiscardHandler)
	led, err := credits.NewService(st, &credits.Options{Logger: discard})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = led.Close(context.Background()) })
	svc, err := usage.NewService(st, &usage.Options{Credits: led, MaxBatch: maxBatch, Logger: discard})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = svc.Close(context.Background()) })
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("acct_meter%03d", i)
		if _, err := led.Open(ctx(), ids[i], credits.Policy{TimeZone: "Asia/Kolkata"}); err != nil {
			b.Fatal(err)
		}
		if _, err := led.Purchase(ctx(), credits.CreditParams{AccountID: ids[i], Amount: credits.AmountFromInt(1_000_000_000), IdempotencyKey: "funds"}); err != nil {
			b.Fatal(err)
		}
	}
	return svc, ids
}

// benchRecord is a Forii-style chat completion: 1,000 prompt and 200
// completion tokens at an exact sub-paisa cost.
func benchRecord(acct string) usage.Record {
	return usage.Record{
		AccountID: acct, KeyID: "key_bench", AuthSource: "api_key", Endpoint: "/v1/chat/completions", Method: "POST",
		Model: "forii/deepseek-v3", StatusCode: 200, ResponseTime: 420 * time.Millisecond, RequestBytes: 2048,
		ResponseBytes: 1024, PromptTokens: 1000, CompletionTokens: 200, Cost: credits.AmountFromMinor(3790, 7),
	}
}

// BenchMeter measures Meter (record + debit + rollup) by one caller on
// one account, and the heap each call leaves behind (see RetainedHeap).
func BenchMeter(b *testing.B, newStore NewStoreFunc) {
	svc, ids := benchMetering(b, newStore, 1, 0)
	rec := benchRecord(ids[0])
	key := make([]byte, 0, 32)
	i := 0
	b.ReportAllocs()
	retained := RetainedHeap(b)
	for b.Loop() {
		i++
		key = strconv.AppendInt(append(key[:0], "req_"...), int64(i), 10)
		if _, err := svc.Meter(ctx(), usage.MeterParams{Record: rec, IdempotencyKey: string(key), TimeZone: "Asia/Kolkata"}); err != nil {
			b.Fatal(err)
		}
	}
	retained(svc)
}

// MeterCallers is the number of Meter calls BenchMeterParallel keeps in
// flight by default: a gateway serving 20,000 requests a second that take a
// second each has 20,000 requests open, so 1,024 metering calls waiting at
// once is a modest load, and it is what lets group commits reach the
// batches of 256-1,024 records that a durable SQLite writer needs to
// sustain 20,000 records a second.
const MeterCallers = 1024

// BenchMeterParallel measures Meter with callers goroutines in flight
// (rounded up to a multiple of GOMAXPROCS), caller i on account i mod 64.
// maxBatch 1 is the naive one transaction per record; 0 the default group
// commit (for stores that want it). It reports the p99 latency of one
// Meter call, the heap kept per call (see RetainedHeap) and, with group
// commit, the mean batch.
func BenchMeterParallel(b *testing.B, newStore NewStoreFunc, maxBatch, callers int) {
	svc, ids := benchMetering(b, newStore, 64, maxBatch)
	var caller, seq atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	procs := runtime.GOMAXPROCS(0)
	b.SetParallelism((max(callers, 1) + procs - 1) / procs)
	b.ReportAllocs()
	retained := RetainedHeap(b)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		rec := benchRecord(ids[int(caller.Add(1))%len(ids)])
		key := make([]byte, 0, 32)
		mine := make([]time.Duration, 0, 1024)
		for pb.Next() {
			key = strconv.AppendInt(append(key[:0], "req_"...), seq.Add(1), 10)
			start := time.Now()
			if _, err := svc.Meter(ctx(), usage.MeterParams{Record: rec, IdempotencyKey: string(key), TimeZone: "Asia/Kolkata"}); err != nil {
				b.Error(err)
				return
			}
			mine = append(mine, time.Since(start))
		}
		mu.Lock()
		lat = append(lat, mine...)
		mu.Unlock()
	})
	b.StopTimer()
	if len(lat) > 0 {
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	}
	lat = nil // the latencies are the benchmark's, not the store's
	retained(svc)
	if st := svc.Stats(); st.Batches > 0 {
		b.ReportMetric(float64(st.BatchedItems)/float64(st.Batches), "records/batch")
	}
}
