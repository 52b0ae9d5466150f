package main

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/usage"
)

func TestUsage(t *testing.T) {
	db := filepath.Join(t.TempDir(), "k.db")
	g := []string{"-db", db, "-profile", "toolapi"}
	id := ok(t, append(g, "account", "create", "-name", "A", "-email", "a@example.com")...)["id"].(string)
	srv := open(t, db, "toolapi", -1)
	ctx := context.Background()
	for i, ep := range []string{"/v1/tools/inspect_domain", "/v1/tools/inspect_domain", "/v1/tools/keyword_volume"} {
		cost := int64(3)
		if ep == "/v1/tools/keyword_volume" {
			cost = 1
		}
		if _, err := srv.Usage.Meter(ctx, usage.MeterParams{Record: usage.Record{
			AccountID: id, Endpoint: ep, Method: "POST", StatusCode: 200, Units: 1, Cost: credits.AmountFromInt(cost),
		}, IdempotencyKey: "m" + itoa(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := srv.Usage.Close(ctx); err != nil {
		t.Fatal(err)
	}
	out := ok(t, append(g, "usage", "-account", id, "-group-by", "endpoint")...)
	rows := out["data"].([]any)
	if len(rows) != 2 || out["to"] != time.Now().UTC().Format(time.DateOnly) {
		t.Fatalf("usage %v", out)
	}
	r0 := rows[0].(map[string]any)
	if r0["endpoint"] != "/v1/tools/inspect_domain" || r0["requests"] != 2.0 || r0["cost"] != 6.0 {
		t.Fatalf("row %v", r0)
	}
	if out := ok(t, append(g, "usage", "-account", id, "-from", "2001-01-01", "-to", "2001-01-31")...); len(out["data"].([]any)) != 0 {
		t.Fatalf("empty range %v", out)
	}
	for _, args := range [][]string{{"-group-by", "color"}, {"-from", "yesterday"}, {"-timezone", "Mars/Olympus"}} {
		if code, _, _ := ctl(t, append(append(g, "usage", "-account", id), args...)...); code != exitUsage {
			t.Errorf("%v: exit %d", args, code)
		}
	}
}
