package memstore

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/storetest"
	"github.com/keyledger/keyledger/usage"
)

// TestConformanceWithCollidingHashes runs the whole conformance suite with
// every index hash forced to the same value, so that each idempotency key,
// hold ID and record ID after the first of an account goes through the
// overflow path of strIndex.
func TestConformanceWithCollidingHashes(t *testing.T) {
	if testing.Short() {
		t.Skip("the conformance suite runs again with real hashes in TestConformance")
	}
	storetest.Run(t, func(testing.TB) store.Store {
		s := newDB()
		s.ledger.mask, s.usage.mask = 0, 0
		return s
	})
}

// TestRetentionCompacts deletes most of an account's records so that the
// packed record log is rewritten, then checks that what is left is still
// listed, replayed and extended correctly.
func TestRetentionCompacts(t *testing.T) {
	ctx := context.Background()
	clk := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	s := newDB()
	svc, err := usage.NewService(s, &usage.Options{Now: func() time.Time { return clk }, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	meter := func(i int) usage.MeterResult {
		t.Helper()
		res, err := svc.Meter(ctx, usage.MeterParams{IdempotencyKey: fmt.Sprintf("k%d", i), Record: usage.Record{
			AccountID: "acct_1", Endpoint: "/v1/x", Method: "GET", StatusCode: 200, Model: "m",
			Metadata: map[string]string{"i": strconv.Itoa(i)},
		}})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	var ids []string
	for i := range 300 {
		clk = clk.Add(time.Hour)
		ids = append(ids, meter(i).Record.ID)
	}
	cut := clk.Add(-49 * time.Hour) // keeps the last 50
	n, err := svc.DeleteRecordsBefore(ctx, cut)
	if err != nil || n != 250 {
		t.Fatalf("DeleteRecordsBefore: %d, %v", n, err)
	}
	ua := s.usage.acct("acct_1", false)
	if ua.dead != 0 || ua.recLog.n != 50 || len(ua.recs) != 50 {
		t.Fatalf("not compacted: dead %d, rows %d, live %d", ua.dead, ua.recLog.n, len(ua.recs))
	}
	page, err := svc.List(ctx, usage.ListQuery{AccountID: "acct_1", Limit: 500})
	if err != nil || len(page.Records) != 50 || page.Records[0].ID != ids[299] || page.Records[49].ID != ids[250] ||
		page.Records[0].Metadata["i"] != "299" {
		t.Fatalf("List after compaction: %d records, %v", len(page.Records), err)
	}
	if res := meter(299); !res.Replayed || res.Record.ID != ids[299] || res.Record.Metadata["i"] != "299" {
		t.Fatalf("replay of a kept record: %+v", res)
	}
	if res := meter(0); !res.Replayed || res.Record.ID != ids[0] { // deleted: the key still knows
		t.Fatalf("replay of a deleted record: %+v", res)
	}
	clk = clk.Add(time.Hour)
	meter(300)
	if page, _ := svc.List(ctx, usage.ListQuery{AccountID: "acct_1", Limit: 500}); len(page.Records) != 51 {
		t.Fatalf("after a new record: %d records", len(page.Records))
	}
}
