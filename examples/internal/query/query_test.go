package query_test

import (
	"errors"
	"testing"
	"time"

	"github.com/keyledger/keyledger/examples/internal/query"
	"github.com/keyledger/keyledger/usage"
)

func TestParsers(t *testing.T) {
	for in, want := range map[string]int{"": 50, "0": 1, "-3": 1, "10000": 500, "99999999999999999999": 500, "-99999999999999999999": 1, "7": 7} {
		if got, err := query.Limit(in); err != nil || got != want {
			t.Errorf("Limit(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	if _, err := query.Limit("ten"); !errors.Is(err, usage.ErrInvalidQuery) {
		t.Error(err)
	}
	if g, err := query.GroupBy("date, model"); err != nil || len(g) != 2 || g[1] != usage.GroupModel {
		t.Errorf("%v %v", g, err)
	}
	for _, bad := range []string{"date,date", "hour", "date,"} {
		if _, err := query.GroupBy(bad); !errors.Is(err, usage.ErrInvalidQuery) {
			t.Errorf("GroupBy(%q): %v", bad, err)
		}
	}
	for _, bad := range []string{"2025-1-15", "2025-02-30", "15-01-2025", ""} {
		if _, err := query.Date(bad); !errors.Is(err, usage.ErrInvalidQuery) {
			t.Errorf("Date(%q): %v", bad, err)
		}
	}
}

func FuzzGroupBy(f *testing.F) {
	for _, s := range []string{"", "date", "date,model", "key, endpoint", "date,date", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		g, err := query.GroupBy(s)
		if err != nil {
			if !errors.Is(err, usage.ErrInvalidQuery) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if len(g) == 0 || len(g) > 4 {
			t.Fatalf("%q gave %v", s, g)
		}
		seen := map[usage.GroupField]bool{}
		for _, f := range g {
			if seen[f] {
				t.Fatalf("%q repeats %s", s, f)
			}
			seen[f] = true
		}
	})
}

func FuzzDate(f *testing.F) {
	for _, s := range []string{"2025-01-15", "2025-02-29", "0000-00-00", "9999-12-31"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := query.Date(s)
		if err != nil {
			return
		}
		if d.Format(time.DateOnly) != s {
			t.Fatalf("%q parsed as %v", s, d)
		}
	})
}

func FuzzLimit(f *testing.F) {
	for _, s := range []string{"", "0", "-1", "50", "10000", " 7", "1e3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := query.Limit(s)
		if err == nil && (n < 1 || n > usage.MaxListLimit) {
			t.Fatalf("Limit(%q) = %d", s, n)
		}
	})
}
