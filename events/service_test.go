package events_test

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/memstore"
)

// TestEndpointDescriptionIsStorableText: the description is free text a
// client sends; what is kept is valid UTF-8 without control characters
// (a NUL, or a rune cut in half by the 200-byte bound, is an error in
// PostgreSQL: the create was a 500) and at most 200 bytes.
func TestEndpointDescriptionIsStorableText(t *testing.T) {
	ctx := context.Background()
	st := memstore.New()
	accts, _ := account.NewService(store.Driver(st), nil)
	a, err := accts.Create(ctx, account.CreateParams{Name: "Asha", Email: "asha@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	svc := events.NewService(store.Driver(st), &events.Options{LookupIP: func(context.Context, string) ([]netip.Addr, error) {
		return []netip.Addr{netip.MustParseAddr("93.184.216.34")}, nil
	}})
	for _, d := range []string{"a\x00b", strings.Repeat("a", 199) + "€", "x\xffy", "line\r\nbreak\t", strings.Repeat("é", 150)} {
		ep, err := svc.CreateEndpoint(ctx, a.ID, "https://hooks.example.com/k", d)
		if err != nil {
			t.Fatalf("%q: %v", d, err)
		}
		got := ep.Description
		if len(got) > 200 || !utf8.ValidString(got) || strings.ContainsFunc(got, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			t.Errorf("description %q kept as %q", d, got)
		}
		if err := svc.DeleteEndpoint(ctx, a.ID, ep.ID); err != nil {
			t.Fatal(err)
		}
	}
}
