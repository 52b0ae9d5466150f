package main

import (
	"errors"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/keyledger/keyledger/examples/gateway/internal/openai"
	"github.com/keyledger/keyledger/usage"
)

var kolkata = func() *time.Location {
	l, err := time.LoadLocation("Asia/Kolkata")
	if err != nil {
		panic(err)
	}
	return l
}()

func TestParseUsageQuery(t *testing.T) {
	// 20:00 UTC on 14 Jan is already 15 Jan in India.
	now := time.Date(2025, 1, 14, 20, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		q          string
		start, end string
		groupBy    []string
		bad        bool
	}{
		{q: "", start: "2024-12-17", end: "2025-01-15", groupBy: []string{"date", "model"}},
		{q: "start=2025-01-01&end=2025-01-31&group_by=model", start: "2025-01-01", end: "2025-01-31", groupBy: []string{"date", "model"}},
		{q: "start=2025-01-15&end=2025-01-15&group_by=key", start: "2025-01-15", end: "2025-01-15", groupBy: []string{"date", "key"}},
		{q: "group_by=date&end=2025-01-10", start: "2024-12-12", end: "2025-01-10", groupBy: []string{"date"}},
		{q: "group_by=model,key,model", start: "2024-12-17", end: "2025-01-15", groupBy: []string{"date", "model", "key"}},
		{q: "start=2025-02-01&end=2025-01-01", bad: true},
		{q: "start=2023-01-01&end=2025-01-01", bad: true},
		{q: "start=2025-1-1", bad: true},
		{q: "group_by=colour", bad: true},
	} {
		v, _ := url.ParseQuery(c.q)
		got, err := parseUsageQuery(v, now, kolkata)
		var re *requestError
		if c.bad {
			if !errors.As(err, &re) {
				t.Errorf("%q: %v, want a 400", c.q, err)
			}
			continue
		}
		if err != nil || got.Start != c.start || got.End != c.end || !slices.Equal(got.GroupBy, c.groupBy) {
			t.Errorf("%q: %+v %v", c.q, got, err)
		}
	}
}

func FuzzUnmarshalStrict(f *testing.F) {
	for _, s := range []string{`{"name":"a","email":"b","password":"c"}`, `{"name":1}`, `{}`, `{} {}`, ``, `[`, `{"x":1}`, `null`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var in struct {
			Name     string    `json:"name"`
			Email    string    `json:"email"`
			Password string    `json:"password"`
			Models   *[]string `json:"models"`
		}
		err := unmarshalStrict(b, &in, false)
		var re *requestError
		if err != nil && !errors.As(err, &re) {
			t.Fatalf("%q: %v is not a 400", b, err)
		}
	})
}

func FuzzParseUsageQuery(f *testing.F) {
	for _, s := range []string{"start=2025-01-01&end=2025-01-31&group_by=model", "group_by=key,date", "end=2025-13-01", "start=%zz"} {
		f.Add(s)
	}
	now := time.Date(2025, 1, 14, 20, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		v, err := url.ParseQuery(s)
		if err != nil {
			return
		}
		q, err := parseUsageQuery(v, now, kolkata)
		var re *requestError
		if err != nil {
			if !errors.As(err, &re) {
				t.Fatalf("%q: %v is not a 400", s, err)
			}
			return
		}
		if q.End < q.Start || len(q.GroupBy) == 0 || q.GroupBy[0] != "date" {
			t.Fatalf("%q: %+v", s, q)
		}
	})
}

func FuzzParseEntryTypes(f *testing.F) {
	for _, s := range []string{"", "debit", "grant,purchase", "bogus", ",,"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ts, err := parseEntryTypes(s)
		if err != nil {
			return
		}
		for _, ty := range ts {
			if !ty.Valid() {
				t.Fatalf("%q: %q", s, ty)
			}
		}
	})
}

func FuzzParseCatalog(f *testing.F) {
	f.Add([]byte(`{"models":[{"id":"a/b","owned_by":"x","prompt_inr_per_1m":1.5,"completion_inr_per_1m":"2"}]}`))
	f.Add([]byte(`{"models":[{"id":"a","prompt_inr_per_1m":-1,"completion_inr_per_1m":0}]}`))
	f.Add([]byte(`{"models":[],"extra":1}`))
	f.Add([]byte(`{"models":[{"id":"a","prompt_inr_per_1m":1,"completion_inr_per_1m":1,"upstream_limit_field":"max_tokens"}]}`))
	f.Add([]byte(`{"models":[{"id":"a","prompt_inr_per_1m":1,"completion_inr_per_1m":1,"upstream_limit_field":"max_new_tokens"}]}`))
	f.Add([]byte(`{"models":[{"id":"a","prompt_inr_per_1m":1,"completion_inr_per_1m":1,"cached_prompt_inr_per_1m":0.25,"cache_write_inr_per_1m":1.25,"reasoning_inr_per_1m":4,"request_fee_inr":0.01,"prices":[{"effective_from":"2027-01-01T00:00:00+05:30","prompt_inr_per_1m":2,"completion_inr_per_1m":2}]}]}`))
	f.Add([]byte(`{"models":[{"id":"a","prompt_inr_per_1m":1,"completion_inr_per_1m":1,"prices":[{"prompt_inr_per_1m":2,"completion_inr_per_1m":2},{"effective_from":"2027-01-01T00:00:00Z","prompt_inr_per_1m":2,"completion_inr_per_1m":2,"reasoning_inr_per_1m":-1}]}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		cf, err := parseCatalog(b)
		if err != nil {
			return
		}
		c, err := newCatalog(cf)
		if err != nil {
			return
		}
		for _, m := range c.models {
			if _, ok := c.prices.Model(m.ID); !ok {
				t.Fatalf("model %q has no price", m.ID)
			}
			// Every version prices any split of its tokens without error.
			for _, v := range append([]catalogDatedPrice{{}}, m.Prices...) {
				r := usage.Record{Model: m.ID, CreatedAt: v.EffectiveFrom, PromptTokens: 10, CompletionTokens: 5, CachedPromptTokens: 3,
					CacheWriteTokens: 2, ReasoningTokens: 4}
				if r.CreatedAt.IsZero() {
					r.CreatedAt = time.Date(1800, 1, 1, 0, 0, 0, 0, time.UTC)
				}
				if c, err := c.prices.Cost(r); err != nil || c.IsNegative() {
					t.Fatalf("model %q at %v: cost %s %v", m.ID, r.CreatedAt, c, err)
				}
			}
			// Every accepted limit field rewrites an upstream body.
			if _, err := openai.RewriteUpstreamBody([]byte(`{"model":"x"}`), openai.UpstreamOptions{Limit: 1, LimitField: m.UpstreamLimitField}); err != nil {
				t.Fatalf("model %q: limit field %q: %v", m.ID, m.UpstreamLimitField, err)
			}
		}
	})
}

func FuzzParseLimit(f *testing.F) {
	for _, s := range []string{"", "1", "500", "501", "-1", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseLimit(s)
		if err == nil && (n < 0 || n > 500) {
			t.Fatalf("%q: %d", s, n)
		}
	})
}
