package main

import (
	"context"
	"io"
	"testing"

	"github.com/keyledger/keyledger/usage"
)

// A request for an unknown model (404 model_not_found) is in the request
// log and the usage error counts, charging nothing.
func TestUnknownModelIsRecorded(t *testing.T) {
	g := newInproc(t, io.Discard)
	tn := g.newTenant(t, "Unknown")
	before, err := g.s.kl.Credits.Balance(context.Background(), tn.id)
	if err != nil {
		t.Fatal(err)
	}
	rec := g.serve("POST", "/inference/v1/chat/completions", "", "Bearer "+tn.key,
		[]byte(`{"model":"no/such-model","messages":[{"role":"user","content":"hi"}]}`))
	if rec.Code != 404 {
		t.Fatalf("unknown model: %d %s", rec.Code, rec.Body)
	}
	page, err := g.s.kl.Usage.List(context.Background(), usage.ListQuery{AccountID: tn.id, Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Records) != 1 || page.Records[0].StatusCode != 404 || page.Records[0].ErrorType != "model_not_found" ||
		page.Records[0].Model != "no/such-model" || page.Records[0].KeyID != tn.keyID {
		t.Fatalf("request log: %+v", page.Records)
	}
	after, _ := g.s.kl.Credits.Balance(context.Background(), tn.id)
	if !after.Equal(before) {
		t.Fatalf("a refusal was charged: %s → %s", before, after)
	}
}
