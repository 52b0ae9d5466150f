package dashboard

import (
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/keyledger/keyledger/credits"
)

func FuzzParseDateRange(f *testing.F) {
	for _, s := range [][2]string{{"", ""}, {"2026-01-01", "2026-01-31"}, {"2026-03-10", "2026-03-01"}, {"2025-01-01", "2026-12-31"},
		{"2026-02-30", ""}, {"", "9999-12-31"}, {"0000-01-01", "0001-01-01"}, {"2026-03-08", "2026-03-09"}} {
		f.Add(s[0], s[1])
	}
	kol, _ := time.LoadLocation("America/New_York") // a zone with DST
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, from, to string) {
		dr, err := parseDateRange(from, to, kol, now)
		if err != nil {
			return
		}
		if len(dr.Days) == 0 || len(dr.Days) > maxRangeDays || dr.Days[0] != dr.From || dr.Days[len(dr.Days)-1] != dr.To || dr.From > dr.To {
			t.Fatalf("%q %q: %+v", from, to, dr)
		}
		for i := 1; i < len(dr.Days); i++ {
			if dr.Days[i] <= dr.Days[i-1] {
				t.Fatalf("days out of order: %v", dr.Days)
			}
		}
	})
}

func FuzzParseModels(f *testing.F) {
	f.Add("forii/deepseek-v3, forii/llama-3.1-8b", true)
	f.Add("a,,b  c\nd", false)
	f.Add(strings.Repeat("m,", 200), false)
	f.Add("\xff", false)
	choices := []string{"forii/deepseek-v3", "forii/llama-3.1-8b"}
	f.Fuzz(func(t *testing.T, s string, restrict bool) {
		var ch []string
		if restrict {
			ch = choices
		}
		ms, err := parseModels([]string{s}, ch)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, m := range ms {
			if m == "" || seen[m] || !utf8.ValidString(m) || len(m) > maxModelLen || strings.ContainsAny(m, ", \n") {
				t.Fatalf("bad model %q in %q", m, ms)
			}
			if restrict && !contains(choices, m) {
				t.Fatalf("%q is not a choice", m)
			}
			seen[m] = true
		}
		if len(ms) > maxModels {
			t.Fatalf("%d models", len(ms))
		}
	})
}

func FuzzParseAmount(f *testing.F) {
	for _, s := range []string{"500", "₹1,500.50", "0.01", "0.001", "-5", "1e3", "INR 20", "", "99999999999999999999", " 7 "} {
		f.Add(s)
	}
	u := credits.INR()
	f.Fuzz(func(t *testing.T, s string) {
		a, err := parseAmount(s, u, "INR")
		if err != nil {
			return
		}
		if !a.IsPositive() || !a.MultipleOf(u.Increment) {
			t.Fatalf("%q parsed to %s", s, a)
		}
	})
}

func FuzzParseExpiry(f *testing.F) {
	for _, s := range []string{"", "2026-12-31", "2026-03-10", "2026-03-09", "9999-12-31", "garbage"} {
		f.Add(s)
	}
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		exp, err := parseExpiry(s, time.UTC, now)
		if err != nil || exp.IsZero() {
			return
		}
		if !exp.After(now) {
			t.Fatalf("%q: expiry %v is not in the future", s, exp)
		}
	})
}

func FuzzParseNext(f *testing.F) {
	for _, s := range []string{"/dashboard/keys", "/dashboard/usage?group=key", "//evil.example/dashboard/", "/dashboard/../admin",
		"https://evil.example/dashboard/", "/dashboard\\@evil", "/dashboard/%2F%2Fevil", "/dashboardx", "/dashboard/\t/x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, next string) {
		p, ok := parseNext("/dashboard", next)
		if !ok {
			return
		}
		u, err := url.Parse(p)
		if err != nil || u.Scheme != "" || u.Host != "" || !strings.HasPrefix(p, "/dashboard/") || strings.HasPrefix(p, "//") || strings.Contains(p, "\\") {
			t.Fatalf("%q accepted as %q", next, p)
		}
	})
}

func FuzzParseSpendLimit(f *testing.F) {
	for _, s := range [][2]string{{"5", "day"}, {"₹5.00", "week"}, {"0", "month"}, {"1e3", "lifetime"}, {"5", "year"}, {"", ""}} {
		f.Add(s[0], s[1])
	}
	u := credits.INR()
	f.Fuzz(func(t *testing.T, amount, period string) {
		l, err := parseSpendLimit(amount, period, u, "INR")
		if err != nil {
			return
		}
		if !l.Amount.IsPositive() || !l.Amount.MultipleOf(u.Increment) || !l.Period.Valid() {
			t.Fatalf("%q %q parsed to %+v", amount, period, l)
		}
	})
}
