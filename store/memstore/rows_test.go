package memstore

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/usage"
)

// sameRecord reports how got differs from want, or "".
func sameRecord(got, want usage.Record) string {
	if !got.Cost.Equal(want.Cost) || !got.UpstreamCost.Equal(want.UpstreamCost) {
		return fmt.Sprintf("costs %s, %s; want %s, %s", got.Cost, got.UpstreamCost, want.Cost, want.UpstreamCost)
	}
	if !got.CreatedAt.Equal(want.CreatedAt) {
		return fmt.Sprintf("created %v, want %v", got.CreatedAt, want.CreatedAt)
	}
	got.Cost, got.UpstreamCost, got.CreatedAt = credits.Amount{}, credits.Amount{}, time.Time{}
	want.Cost, want.UpstreamCost, want.CreatedAt = credits.Amount{}, credits.Amount{}, time.Time{}
	if !reflect.DeepEqual(got, want) {
		return fmt.Sprintf("\n got %+v\nwant %+v", got, want)
	}
	return ""
}

// TestRecordRowsRoundTrip packs records whose dims alternate among more
// values than are remembered, whose counts do and do not fit 32 bits and
// whose costs do and do not fit an int64, then reads them back before and
// after retention compacts the account, and again for records stored after
// the compaction with the same values (the remembered strings and dims
// must have been reset with the arena they point into).
func TestRecordRowsRoundTrip(t *testing.T) {
	ctx := context.Background()
	s := newDB()
	a := s.usage.acct("acct_1", true)
	huge := credits.NewAmount(decimal.RequireFromString("123456789012345.123456789012345678"))
	wide := []int64{math.MaxUint32 + 1, -1, math.MinInt64, math.MaxInt64}
	clk := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	mk := func(i int) usage.Record {
		// The first 150 records take turns among three kinds, then each
		// field cycles on its own, so most records are of a new kind.
		k, e, m, x := i%3, i%3, i%3, i%3
		if i >= 150 {
			k, e, m, x = i%3, i%5, i%7, i%2
		}
		r := usage.Record{
			ID: fmt.Sprintf("log_%04d", i), AccountID: "acct_1", KeyID: []string{"key_a", "key_b", ""}[k],
			AuthSource: "api_key", Endpoint: fmt.Sprintf("/v1/op/%d", e), Method: []string{"GET", "POST", "PUT"}[x],
			Model: fmt.Sprintf("model-%d", m), StatusCode: 200, ResponseTime: time.Duration(i) * time.Hour,
			RequestBytes: int64(i), ResponseBytes: math.MaxUint32, PromptTokens: int64(i) * 1000, CompletionTokens: 7,
			Units: int64(i % 3), CachedUnits: int64(i % 2), Cost: credits.AmountFromMinor(int64(i), 7),
			CreatedAt: clk.Add(time.Duration(i) * time.Minute),
		}
		if i%4 == 0 {
			r.StatusCode, r.ErrorType, r.ErrorMessage = 502, "upstream_error", fmt.Sprintf("bad gateway %d", i%2)
		}
		if i%6 == 0 {
			r.Metadata = map[string]string{"i": fmt.Sprint(i)}
		}
		if i%9 == 0 {
			r.UpstreamCost = huge
		}
		if i%10 == 0 {
			r.CachedUnits = wide[i/10%len(wide)]
		}
		return r
	}
	add := func(i int) usage.Record {
		r := mk(i)
		a.addRecord(&r, a.opStrs.put(r.ID))
		return r
	}
	check := func(when string, want []usage.Record) {
		t.Helper()
		got, err := s.UsageRecords(ctx, usage.RecordQuery{AccountID: "acct_1", Limit: 1000})
		if err != nil || len(got) != len(want) {
			t.Fatalf("%s: %d records, %v; want %d", when, len(got), err, len(want))
		}
		for i := range got {
			if d := sameRecord(got[i], want[len(want)-1-i]); d != "" {
				t.Fatalf("%s: record %s: %s", when, want[len(want)-1-i].ID, d)
			}
		}
	}
	var all []usage.Record
	for i := range 150 {
		all = append(all, add(i))
	}
	if n := a.strs.dims.n; n != 6 { // three kinds, with and without an error
		t.Fatalf("%d dims rows for 150 records of 6 kinds", n)
	}
	for i := 150; i < 300; i++ {
		all = append(all, add(i))
	}
	check("stored", all)
	n, err := s.DeleteUsageBefore(ctx, all[250].CreatedAt)
	if err != nil || n != 250 {
		t.Fatalf("DeleteUsageBefore: %d, %v", n, err)
	}
	if a.dead != 0 || a.recLog.n != 50 {
		t.Fatalf("not compacted: dead %d, rows %d", a.dead, a.recLog.n)
	}
	check("compacted", all[250:])
	for i := 300; i < 320; i++ {
		all = append(all, add(i))
	}
	check("after compaction", all[250:])
}

// TestRowsShareStrings checks that the strings one request stores more
// than once are stored once: the key and hold ID of an op, its hold and
// its entry; the entry ID of a settled hold; the ID of a record and of the
// meter op that claimed it; and low-cardinality values across requests.
func TestRowsShareStrings(t *testing.T) {
	ctx := context.Background()
	s := newDB()
	discard := slog.New(slog.DiscardHandler)
	led, err := credits.NewService(s, &credits.Options{Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := usage.NewService(s, &usage.Options{Credits: led, Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := led.Open(ctx, "acct_1", credits.Policy{}); err != nil {
		t.Fatal(err)
	}
	if _, err := led.Purchase(ctx, credits.CreditParams{AccountID: "acct_1", Amount: credits.AmountFromInt(100), IdempotencyKey: "funds"}); err != nil {
		t.Fatal(err)
	}
	rec := usage.Record{AccountID: "acct_1", KeyID: "key_1", AuthSource: "api_key", Endpoint: "/v1/chat/completions",
		Method: "POST", Model: "m-1", StatusCode: 200, Cost: credits.AmountFromMinor(5, 2)}
	la, _ := s.ledger.acct("acct_1")
	ua := s.usage.acct("acct_1", true)
	for i := range 3 {
		// A plain debit: the entry's key is the op's.
		res, err := svc.Meter(ctx, usage.MeterParams{Record: rec, IdempotencyKey: fmt.Sprint("d-", i)})
		if err != nil {
			t.Fatal(err)
		}
		op, e := la.lastOp(), la.lastEntry()
		if e.key != op.key || la.strs.get(e.key) != fmt.Sprint("d-", i) {
			t.Fatalf("debit %d: entry key %x, op key %x", i, e.key, op.key)
		}
		if mop := ua.opLog.at(ua.opLog.n - 1); ua.recLog.at(ua.recLog.n-1).id != mop.recordID ||
			ua.opStrs.get(mop.recordID) != res.Record.ID {
			t.Fatalf("debit %d: the record does not share its ID with its meter op", i)
		}

		// A reserve: the hold's ID and key are the op's.
		h, err := led.Reserve(ctx, credits.ReserveParams{AccountID: "acct_1", Amount: credits.AmountFromInt(1), TTL: time.Minute,
			Reference: fmt.Sprint("g-", i), IdempotencyKey: fmt.Sprint("h-", i)})
		if err != nil {
			t.Fatal(err)
		}
		op = la.lastOp()
		hi, _ := la.holds.get((*holdKeys)(la), h.ID)
		if p := la.holdLog.at(int(hi)); p.id != op.hold || p.key != op.key || la.strs.get(p.id) != h.ID {
			t.Fatalf("reserve %d: hold id %x key %x, op hold %x key %x", i, p.id, p.key, op.hold, op.key)
		}

		// Its settlement: the entry names the hold's ID, the hold the entry's.
		if _, err := svc.Meter(ctx, usage.MeterParams{Record: rec, HoldID: h.ID, IdempotencyKey: fmt.Sprint("s-", i)}); err != nil {
			t.Fatal(err)
		}
		e, p := la.lastEntry(), la.holdLog.at(int(hi))
		if e.hold != p.id || p.entryID != e.id || la.strs.get(p.entryID) == "" {
			t.Fatalf("settle %d: entry hold %x, hold id %x; hold entry %x, entry id %x", i, e.hold, p.id, p.entryID, e.id)
		}
	}
	for _, c := range []struct {
		arena *arena
		s     string
	}{{&la.strs, "debit"}, {&la.strs, "settled"}, {&la.strs, "active"}, {&ua.strs.arena, "m-1"}, {&ua.strs.arena, "/v1/chat/completions"}} {
		n := 0
		for _, b := range c.arena.chunks {
			n += bytes.Count(b, []byte(c.s))
		}
		if n != 1 {
			t.Errorf("%q stored %d times", c.s, n)
		}
	}
	if ua.strs.dims.n != 1 {
		t.Errorf("%d dims rows for 6 records of the same kind", ua.strs.dims.n)
	}
}
