package main

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/keyledger/keyledger/internal/fakeclock"
)

// TestUsageDaysInKolkata meters requests on both sides of midnight in
// India and reads them back per day, model and key, end day inclusive.
func TestUsageDaysInKolkata(t *testing.T) {
	// 18:20 UTC on 15 Jan is 23:50 IST; twenty minutes later it is 16 Jan
	// in India but still 15 Jan in UTC.
	clock := fakeclock.New(time.Date(2025, 1, 15, 18, 20, 0, 0, time.UTC))
	g := startGatewayAt(t, clock.Now, filepath.Join(t.TempDir(), "gw.db"))
	u := g.signup("Usage")
	other := g.must(201, "POST", "/v1/accounts/"+u.id+"/apiKeys", u.token, `{"name":"second"}`)
	g.must(200, "POST", "/inference/v1/chat/completions", u.key, chatBody("forii/deepseek-v3", 4, false))
	g.must(200, "POST", "/inference/v1/chat/completions", u.key, chatBody("forii/llama-3.1-8b", 4, true))
	clock.Advance(20 * time.Minute)
	g.must(200, "POST", "/inference/v1/chat/completions", other["key"].(string), chatBody("forii/deepseek-v3", 4, false))
	g.must(200, "POST", "/inference/v1/chat/completions", u.key, chatBody("forii/deepseek-v3", 4, false))

	rows := func(q string) []map[string]any {
		t.Helper()
		var out []map[string]any
		for _, r := range g.must(200, "GET", "/v1/accounts/"+u.id+"/usage?"+q, u.token, nil)["data"].([]any) {
			out = append(out, r.(map[string]any))
		}
		return out
	}
	byModel := rows("start=2025-01-15&end=2025-01-16&group_by=model")
	if len(byModel) != 3 {
		t.Fatalf("by model: %v", byModel)
	}
	// Day 1: one deepseek, one llama; day 2: two deepseek.
	want := []struct {
		date, model      string
		requests, prompt int64
		completion       int64
		cost             string
	}{
		{"2025-01-15", "forii/deepseek-v3", 1, 10, 4, "0.0047"},
		{"2025-01-15", "forii/llama-3.1-8b", 1, 10, 4, "0.000112"},
		{"2025-01-16", "forii/deepseek-v3", 2, 20, 8, "0.0094"},
	}
	for i, w := range want {
		r := byModel[i]
		if r["date"] != w.date || r["model"] != w.model || num(t, r["requests"]).IntPart() != w.requests ||
			num(t, r["prompt_tokens"]).IntPart() != w.prompt || num(t, r["completion_tokens"]).IntPart() != w.completion ||
			num(t, r["total_tokens"]).IntPart() != w.prompt+w.completion || num(t, r["cost_inr"]).String() != w.cost {
			t.Errorf("row %d: %v, want %+v", i, r, w)
		}
	}
	// The end day is inclusive, and alone it is one day.
	if day2 := rows("start=2025-01-16&end=2025-01-16&group_by=model"); len(day2) != 1 || day2[0]["date"] != "2025-01-16" {
		t.Fatalf("16 Jan: %v", day2)
	}
	byKey := rows("start=2025-01-16&end=2025-01-16&group_by=key")
	if len(byKey) != 2 || byKey[0]["key_id"] == nil || byKey[0]["key_id"] == byKey[1]["key_id"] || byKey[0]["model"] != nil {
		t.Fatalf("by key: %v", byKey)
	}
	byDate := rows("start=2025-01-15&end=2025-01-16&group_by=date")
	if len(byDate) != 2 || num(t, byDate[0]["requests"]).IntPart() != 2 || num(t, byDate[1]["cost_inr"]).String() != "0.0094" {
		t.Fatalf("by date: %v", byDate)
	}
}
