package keyledger_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/memstore"
	"github.com/keyledger/keyledger/usage"
)

// The facade's clock and the host's clock of one nested option: each test
// below proves that the nested value survives New (it used to be
// overwritten by Options.Now).
var (
	facadeTime = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	hostTime   = time.Date(2031, 6, 1, 12, 0, 0, 0, time.UTC)
)

func facadeNow() time.Time { return facadeTime }
func hostNow() time.Time   { return hostTime }

func newMerged(t *testing.T, o *keyledger.Options) *keyledger.KeyLedger {
	t.Helper()
	st := memstore.New()
	if o.Now == nil {
		o.Now = facadeNow
	}
	if o.Accounts == nil {
		o.Accounts = &account.Options{}
	}
	o.Accounts.Argon2 = fastArgon
	kl, err := keyledger.New(st, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kl.Close(context.Background()); st.Close() })
	return kl
}

func TestOptionsMergeAccounts(t *testing.T) {
	cat := bigCatalog(t)
	kl := newMerged(t, &keyledger.Options{Accounts: &account.Options{Now: hostNow, Catalog: cat}})
	a, err := kl.Accounts.Create(context.Background(), account.CreateParams{Name: "A", Email: "a@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if !a.CreatedAt.Equal(hostTime) {
		t.Errorf("account created at %v, want the host's Accounts.Now %v", a.CreatedAt, hostTime)
	}
	if kl.Catalog != cat {
		t.Error("Accounts.Catalog was not adopted as the facade's catalog")
	}
}

func TestOptionsMergeKeys(t *testing.T) {
	kl := newMerged(t, &keyledger.Options{Keys: &apikey.Options{Now: hostNow}})
	ctx := context.Background()
	a, err := kl.Accounts.Create(ctx, account.CreateParams{Name: "A", Email: "a@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if !a.CreatedAt.Equal(facadeTime) {
		t.Errorf("account created at %v, want the facade's Now %v (filled in)", a.CreatedAt, facadeTime)
	}
	_, k, err := kl.Keys.Create(ctx, apikey.CreateParams{AccountID: a.ID, Name: "k"})
	if err != nil {
		t.Fatal(err)
	}
	if !k.CreatedAt.Equal(hostTime) {
		t.Errorf("key created at %v, want the host's Keys.Now %v", k.CreatedAt, hostTime)
	}
}

func TestOptionsMergeCredits(t *testing.T) {
	kl := newMerged(t, &keyledger.Options{Credits: &credits.Options{Now: hostNow}})
	ctx := context.Background()
	if _, err := kl.Credits.Open(ctx, "acct_1", credits.Policy{}); err != nil {
		t.Fatal(err)
	}
	e, err := kl.Credits.Grant(ctx, credits.CreditParams{AccountID: "acct_1", Amount: credits.NewAmount(decimal.NewFromInt(5)), IdempotencyKey: "g1"})
	if err != nil {
		t.Fatal(err)
	}
	if !e.CreatedAt.Equal(hostTime) {
		t.Errorf("entry created at %v, want the host's Credits.Now %v", e.CreatedAt, hostTime)
	}
}

func TestOptionsMergeUsage(t *testing.T) {
	kl := newMerged(t, &keyledger.Options{Usage: &usage.Options{Now: hostNow}})
	ctx := context.Background()
	if _, err := kl.Credits.Open(ctx, "acct_1", credits.Policy{}); err != nil {
		t.Fatal(err)
	}
	res, err := kl.Usage.Meter(ctx, usage.MeterParams{
		Record:         usage.Record{AccountID: "acct_1", Endpoint: "/v1/x", StatusCode: 200},
		IdempotencyKey: "m1",
	})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Record.CreatedAt.Equal(hostTime) {
		t.Errorf("record created at %v, want the host's Usage.Now %v", res.Record.CreatedAt, hostTime)
	}
}

func TestOptionsMergeConflicts(t *testing.T) {
	other := bigCatalog(t)
	for name, o := range map[string]*keyledger.Options{
		"catalogs": {Catalog: account.DefaultCatalog(), Accounts: &account.Options{Catalog: other}},
		"credits":  {Usage: &usage.Options{Credits: &credits.Service{}}},
	} {
		if _, err := keyledger.New(memstore.New(), o); !errors.Is(err, keyledger.ErrInvalidOptions) {
			t.Errorf("%s: New = %v, want ErrInvalidOptions", name, err)
		}
	}
}

// A host's own Accounts.Changed hook survives New too: it runs after the
// facade's bookkeeping.
func TestOptionsMergeAccountsChanged(t *testing.T) {
	var got []account.Change
	kl := newMerged(t, &keyledger.Options{Accounts: &account.Options{
		Changed: func(_ context.Context, _ account.Account, c account.Change) error {
			got = append(got, c)
			return nil
		},
	}})
	ctx := context.Background()
	a, err := kl.Signup(ctx, account.CreateParams{Name: "A", Email: "a@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	name := "B"
	if _, err := kl.Accounts.Update(ctx, a.ID, account.UpdateParams{Name: &name}); err != nil {
		t.Fatal(err)
	}
	if _, err := kl.Accounts.Close(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Update.Name == nil || !got[1].Closed {
		t.Fatalf("host hook saw %+v, want the update and the closure", got)
	}
}

// A backend that was never opened is ErrInvalidOptions, not a panic: nil,
// a nil pointer, a zero value, store.Wrap(nil).
func TestNewRefusesAnUnopenedBackend(t *testing.T) {
	var nilMem *memstore.Store
	for name, b := range map[string]store.Backend{
		"nil":         nil,
		"nil pointer": nilMem,
		"zero value":  &memstore.Store{},
		"Wrap(nil)":   store.Wrap(nil),
	} {
		if kl, err := keyledger.New(b, nil); !errors.Is(err, keyledger.ErrInvalidOptions) {
			t.Errorf("%s: New = %v, %v; want ErrInvalidOptions", name, kl, err)
		}
	}
}
