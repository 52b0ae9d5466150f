package sqlledger

import (
	"testing"
	"time"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/usage"
)

func TestEntriesQueryPlaceholders(t *testing.T) {
	from := time.Unix(0, 5)
	q := credits.EntryFilter{Types: []credits.EntryType{"grant", "debit"}, From: from}
	for _, tc := range []struct {
		dollar bool
		want   string
	}{
		{true, `SELECT ` + EntryColumns + ` FROM credit_entries WHERE account_id = $1 AND seq < $2 AND type IN ($3, $4) AND created_at >= $5 ORDER BY seq DESC LIMIT $6`},
		{false, `SELECT ` + EntryColumns + ` FROM credit_entries WHERE account_id = ? AND seq < ? AND type IN (?, ?) AND created_at >= ? ORDER BY seq DESC LIMIT ?`},
	} {
		got, args := EntriesQuery("a", &q, 9, 10, tc.dollar)
		if got != tc.want {
			t.Errorf("dollar=%v:\n got %s\nwant %s", tc.dollar, got, tc.want)
		}
		want := []any{"a", int64(9), "grant", "debit", int64(5), 10}
		if len(args) != len(want) {
			t.Fatalf("args %v, want %v", args, want)
		}
		for i := range want {
			if args[i] != want[i] {
				t.Errorf("arg %d = %#v, want %#v", i, args[i], want[i])
			}
		}
	}
}

func TestRecordsQueryKeepsPositionOnlyForLists(t *testing.T) {
	q := usage.RecordQuery{AccountID: "a", Model: "m", AfterID: "r9", AfterTime: time.Unix(0, 7), Limit: 50}
	list, args := RecordsQuery(&q, true)
	if want := `SELECT ` + RecordColumns + ` FROM usage_records WHERE account_id = $1 AND model = $2 AND (created_at, id) < ($3, $4) ORDER BY created_at DESC, id DESC LIMIT $5`; list != want {
		t.Errorf("list query:\n got %s\nwant %s", list, want)
	}
	if len(args) != 5 || args[3] != "r9" || args[4] != 50 {
		t.Errorf("list args %v", args)
	}
	scan, args := ScanQuery(q, false)
	if want := `SELECT ` + RecordColumns + ` FROM usage_records WHERE account_id = ? AND model = ?`; scan != want {
		t.Errorf("scan query:\n got %s\nwant %s", scan, want)
	}
	if len(args) != 2 {
		t.Errorf("scan args %v", args)
	}
}

func TestParseAmountDropsTrailingZeros(t *testing.T) {
	for in, want := range map[string]string{"1.50": "1.5", "2.000": "2", "30": "30", "-0.10": "-0.1"} {
		got, err := ParseAmount(in)
		if err != nil || got.String() != want {
			t.Errorf("ParseAmount(%q) = %s, %v; want %s", in, got, err, want)
		}
	}
}
