package auditlog_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/keyledger/keyledger/auditlog"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/memstore"
)

func TestAppendTruncatesClientText(t *testing.T) {
	svc, err := auditlog.NewService(store.Driver(memstore.New()), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := auditlog.WithClient(context.Background(), "198.51.100.1", strings.Repeat("é", 400)+"\xff")
	e, err := svc.Append(ctx, auditlog.Entry{AccountID: "acct_1", Action: "key.update",
		Changes: []auditlog.Change{{Field: "name", Before: strings.Repeat("x", 2000), After: "y"}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(e.UserAgent) > auditlog.MaxUserAgentLen || !utf8.ValidString(e.UserAgent) ||
		len(e.Changes[0].Before) != auditlog.MaxValueLen {
		t.Errorf("not truncated: ua %d bytes, before %d bytes", len(e.UserAgent), len(e.Changes[0].Before))
	}
	if e.Actor.Kind != auditlog.ActorSystem {
		t.Errorf("actor %v, want the system by default", e.Actor)
	}
}

func TestNewServiceRejectsBadOptions(t *testing.T) {
	for _, o := range []*auditlog.Options{{Retention: -time.Hour}, {PruneBatch: -1}, {PruneMaxBatches: -1}} {
		if _, err := auditlog.NewService(store.Driver(memstore.New()), o); err == nil {
			t.Errorf("NewService(%+v) accepted", o)
		}
	}
	if _, err := auditlog.NewService(nil, nil); err == nil {
		t.Error("nil store accepted")
	}
}

// FuzzParseActor: any text parses to a valid actor or ErrInvalidQuery, and
// a parsed actor prints back to what was parsed.
func FuzzParseActor(f *testing.F) {
	for _, s := range []string{"", "key", "key:key_1", "admin:cli", "root", ":", "session:" + strings.Repeat("a", 200)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := auditlog.ParseActor(s)
		if err != nil {
			if !errors.Is(err, auditlog.ErrInvalidQuery) {
				t.Fatalf("ParseActor(%q) = %v", s, err)
			}
			return
		}
		if a.String() != strings.TrimSuffix(s, ":") && a.String() != s {
			t.Fatalf("ParseActor(%q) = %v", s, a)
		}
	})
}

// FuzzList: any cursor, action and actor text from a client gives a page
// or an invalid-input error, never a failure or another account's entry.
func FuzzList(f *testing.F) {
	f.Add("", "key.*", "key:key_1", 10)
	f.Add("a1", "key.create", "", 0)
	f.Add("zz", "", "root", -5)
	f.Add("a"+strings.Repeat("z", 20), ".*", "admin", 600)
	st := memstore.New()
	svc, _ := auditlog.NewService(store.Driver(st), nil)
	ctx := context.Background()
	for i := range 5 {
		acc := []string{"acct_a", "acct_b"}[i%2]
		_, _ = svc.Append(auditlog.WithActor(ctx, auditlog.Actor{Kind: auditlog.ActorKey, ID: "key_1"}), auditlog.Entry{AccountID: acc, Action: "key.create"})
	}
	f.Fuzz(func(t *testing.T, cursor, action, actor string, limit int) {
		q := auditlog.Query{AccountID: "acct_a", Cursor: cursor, Action: action, Limit: limit}
		if a, err := auditlog.ParseActor(actor); err == nil {
			q.Actor = a
		}
		p, err := svc.List(ctx, q)
		if err != nil {
			if !errors.Is(err, auditlog.ErrInvalidCursor) && !errors.Is(err, auditlog.ErrInvalidQuery) {
				t.Fatalf("List: %v", err)
			}
			return
		}
		for _, e := range p.Entries {
			if e.AccountID != "acct_a" {
				t.Fatalf("another account's entry: %+v", e)
			}
		}
	})
}

// TestTextNoStoreCanHold: text a SQL store cannot hold or compare (a NUL
// byte, invalid UTF-8: PostgreSQL refuses both with an error) never
// reaches the store. A filter holding it cannot match any entry, so it is
// ErrInvalidQuery (a 400, not the 500 of the store's error); an entry's
// identifying fields holding it are ErrInvalidEntry; free text (change
// values, the user agent) is cleaned.
func TestTextNoStoreCanHold(t *testing.T) {
	svc, err := auditlog.NewService(store.Driver(memstore.New()), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, q := range []auditlog.Query{
		{AccountID: "acct_1", Action: "a\x00b"},
		{AccountID: "acct_1", Action: "\xff"},
		{AccountID: "acct_1", Action: "\xff.*"},
		{AccountID: "acct_1", Actor: auditlog.Actor{Kind: auditlog.ActorSession, ID: "\x00"}},
		{AccountID: "acct_1", Actor: auditlog.Actor{Kind: auditlog.ActorKey, ID: "key_\xff"}},
		{AccountID: "acct\x00"},
	} {
		if _, err := svc.List(ctx, q); !errors.Is(err, auditlog.ErrInvalidQuery) {
			t.Errorf("List(%#v) = %v, want ErrInvalidQuery", q, err)
		}
	}
	if _, err := auditlog.ParseActor("key:\x00"); !errors.Is(err, auditlog.ErrInvalidQuery) {
		t.Errorf("ParseActor with a NUL: %v", err)
	}
	for _, e := range []auditlog.Entry{
		{AccountID: "acct_1", Action: "key.\x00"},
		{AccountID: "acct_1", Action: "key.\xff"},
		{AccountID: "acct_\x00", Action: "key.create"},
		{AccountID: "acct_1", Action: "key.create", Target: auditlog.Target{Type: "key", ID: "\x00"}},
		{AccountID: "acct_1", Action: "key.create", Changes: []auditlog.Change{{Field: "n\x00"}}},
	} {
		if _, err := svc.Append(ctx, e); !errors.Is(err, auditlog.ErrInvalidEntry) {
			t.Errorf("Append(%#v) = %v, want ErrInvalidEntry", e, err)
		}
	}
	e, err := svc.Append(auditlog.WithClient(ctx, "198.51.100.1", "ua\x00"), auditlog.Entry{AccountID: "acct_1", Action: "key.update",
		Changes: []auditlog.Change{{Field: "name", Before: "a\x00b", After: "c\xffd"}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{e.UserAgent, e.Changes[0].Before, e.Changes[0].After} {
		if strings.ContainsRune(s, 0) || !utf8.ValidString(s) {
			t.Errorf("kept %q", s)
		}
	}
}
