package usage

import (
	"errors"
	"math/rand/v2"
	"testing"
	"time"
)

// TestDayOfMatchesDay checks the cached day against Day across zones with
// daylight saving, midnight transitions and a date-line jump, in random
// order so that the cache is hit, missed and replaced.
func TestDayOfMatchesDay(t *testing.T) {
	var s Service
	zones := []string{"UTC", "Asia/Kolkata", "America/New_York", "America/Havana", "America/Santiago", "Pacific/Apia", "Australia/Lord_Howe"}
	locs := make([]*time.Location, 0, len(zones))
	for _, z := range zones {
		l, err := time.LoadLocation(z)
		if err != nil {
			t.Skipf("no zone data for %s: %v", z, err)
		}
		locs = append(locs, l)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	start := time.Date(2010, 1, 1, 0, 0, 0, 0, time.UTC)
	t0 := start
	for range 200_000 {
		loc := locs[rng.IntN(len(locs))]
		switch rng.IntN(3) {
		case 0: // a nearby instant: mostly cache hits
			t0 = t0.Add(time.Duration(rng.Int64N(int64(2 * time.Hour))))
		case 1: // anywhere in 20 years
			t0 = start.Add(time.Duration(rng.Int64N(int64(20 * 365 * 24 * time.Hour))))
		default: // right around a local midnight
			y, m, d := t0.In(loc).Date()
			t0 = time.Date(y, m, d+1, 0, 0, 0, 0, loc).Add(time.Duration(rng.Int64N(4)-2) * time.Nanosecond)
		}
		if got, want := s.dayOf(t0, loc), Day(t0, loc); got != want {
			t.Fatalf("dayOf(%s in %s) = %s, want %s", t0.Format(time.RFC3339Nano), loc, got, want)
		}
	}
}

func TestCursorRoundTrip(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	c := encodeCursor(at, "log_x")
	if gt, id, err := decodeCursor(c); err != nil || !gt.Equal(at) || id != "log_x" {
		t.Errorf("cursor round trip: %v %q %v", gt, id, err)
	}
	for _, bad := range []string{"2025-1-15", "2025-02-30", "15-01-2025", ""} {
		if _, err := parseDate(bad); !errors.Is(err, ErrInvalidQuery) {
			t.Errorf("parseDate(%q): %v", bad, err)
		}
	}
}

func FuzzParseDate(f *testing.F) {
	for _, s := range []string{"2025-01-15", "2025-02-29", "0000-00-00", "9999-12-31"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := parseDate(s)
		if err != nil {
			return
		}
		if d.Format(time.DateOnly) != s {
			t.Fatalf("%q parsed as %v", s, d)
		}
	})
}

func FuzzCursor(f *testing.F) {
	f.Add(encodeCursor(time.Unix(0, 1), "log_1"))
	f.Add("")
	f.Add("bm90IGEgY3Vyc29y")
	f.Fuzz(func(t *testing.T, c string) {
		at, id, err := decodeCursor(c)
		if err != nil {
			if !errors.Is(err, ErrInvalidCursor) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if again := encodeCursor(at, id); again != c {
			t.Fatalf("cursor %q decodes to (%v, %q) which encodes to %q", c, at, id, again)
		}
	})
}
