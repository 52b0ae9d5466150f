package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyledger/keyledger/account"
)

func runAccounts(t *testing.T, newStore NewStoreFunc) {
	t.Run("CreateGet", func(t *testing.T) { testCreateGet(t, newStore) })
	t.Run("BadInputWritesNothing", func(t *testing.T) { testAccountBadInput(t, newStore) })
	t.Run("EmailUniqueCaseInsensitive", func(t *testing.T) { testEmailUnique(t, newStore) })
	t.Run("ConcurrentSameEmail", func(t *testing.T) { testConcurrentSameEmail(t, newStore) })
	t.Run("Update", func(t *testing.T) { testUpdate(t, newStore) })
	t.Run("ConcurrentUpdatesLoseNothing", func(t *testing.T) { testConcurrentUpdates(t, newStore) })
	t.Run("ListPages", func(t *testing.T) { testListPages(t, newStore) })
	t.Run("ValuesAreCopies", func(t *testing.T) { testValuesAreCopies(t, newStore) })
}

func ctx() context.Context { return context.Background() }

// sameAccount compares accounts with times compared as instants.
func sameAccount(t testing.TB, got, want account.Account) {
	t.Helper()
	norm := func(a account.Account) account.Account {
		a = a.Clone()
		a.CreatedAt, a.UpdatedAt = a.CreatedAt.UTC(), a.UpdatedAt.UTC()
		return a
	}
	if g, w := norm(got), norm(want); !reflect.DeepEqual(g, w) {
		t.Fatalf("account differs:\n got %+v\nwant %+v", g, w)
	}
}

func mustCreate(t testing.TB, svc *account.Service, p account.CreateParams) account.Account {
	t.Helper()
	a, err := svc.Create(ctx(), p)
	if err != nil {
		t.Fatalf("Create(%s): %v", p.Email, err)
	}
	return a
}

func testCreateGet(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	a := mustCreate(t, e.acc, account.CreateParams{
		Name: "  Asha Rao ", Email: " Asha@Example.COM", Password: "correct horse", Plan: "starter",
		TimeZone: "Asia/Kolkata", Metadata: map[string]string{"gst": "29ABCDE1234F1Z5"},
	})
	if a.Name != "Asha Rao" || a.Email != "asha@example.com" || a.Plan != "starter" || a.Status != account.StatusActive ||
		a.TimeZone != "Asia/Kolkata" || !a.CreatedAt.Equal(epoch) || !a.UpdatedAt.Equal(epoch) || len(a.ID) != len("acct_")+26 {
		t.Fatalf("created %+v", a)
	}
	got, err := e.acc.Get(ctx(), a.ID)
	if err != nil {
		t.Fatal(err)
	}
	sameAccount(t, got, a)
	got, err = e.acc.GetByEmail(ctx(), "ASHA@example.com")
	if err != nil {
		t.Fatal(err)
	}
	sameAccount(t, got, a)
	if _, err := e.acc.Get(ctx(), "acct_nope"); !errors.Is(err, account.ErrNotFound) {
		t.Fatalf("Get unknown: %v, want ErrNotFound", err)
	}
	if _, err := e.acc.GetByEmail(ctx(), "nobody@example.com"); !errors.Is(err, account.ErrNotFound) {
		t.Fatalf("GetByEmail unknown: %v, want ErrNotFound", err)
	}
	d := mustCreate(t, e.acc, account.CreateParams{Name: "Default", Email: "d@example.com"})
	if d.Plan != "free" || d.TimeZone != "UTC" || d.Metadata != nil {
		t.Fatalf("defaults: %+v", d)
	}
}

func testAccountBadInput(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	good := account.CreateParams{Name: "Ok", Email: "ok@example.com", Password: "long enough"}
	cases := []struct {
		name string
		mod  func(*account.CreateParams)
		want error
	}{
		{"empty name", func(p *account.CreateParams) { p.Name = "  " }, account.ErrInvalidName},
		{"long name", func(p *account.CreateParams) { p.Name = strings.Repeat("é", 121) }, account.ErrInvalidName},
		{"control char name", func(p *account.CreateParams) { p.Name = "a\x00b" }, account.ErrInvalidName},
		{"invalid utf8 name", func(p *account.CreateParams) { p.Name = "a\xffb" }, account.ErrInvalidName},
		{"bad email", func(p *account.CreateParams) { p.Email = "not-an-email" }, account.ErrInvalidEmail},
		{"display name email", func(p *account.CreateParams) { p.Email = "Bob <bob@example.com>" }, account.ErrInvalidEmail},
		{"no dot domain", func(p *account.CreateParams) { p.Email = "bob@localhost" }, account.ErrInvalidEmail},
		{"unknown plan", func(p *account.CreateParams) { p.Plan = "platinum" }, account.ErrUnknownPlan},
		{"bad time zone", func(p *account.CreateParams) { p.TimeZone = "Mars/Olympus" }, account.ErrInvalidTimeZone},
		{"short password", func(p *account.CreateParams) { p.Password = "short" }, account.ErrInvalidPassword},
		{"huge password", func(p *account.CreateParams) { p.Password = account.Secret(strings.Repeat("x", 1025)) }, account.ErrInvalidPassword},
		{"bad metadata", func(p *account.CreateParams) { p.Metadata = map[string]string{"": "v"} }, account.ErrInvalidMetadata},
	}
	for _, c := range cases {
		p := good
		c.mod(&p)
		if _, err := e.acc.Create(ctx(), p); !errors.Is(err, c.want) {
			t.Errorf("%s: err = %v, want %v", c.name, err, c.want)
		}
	}
	if pg, err := e.acc.List(ctx(), account.ListParams{}); err != nil || len(pg.Accounts) != 0 {
		t.Fatalf("bad input wrote accounts: %v %v", pg.Accounts, err)
	}
	a := mustCreate(t, e.acc, good)
	badUpdates := []struct {
		name string
		p    account.UpdateParams
		want error
	}{
		{"name", account.UpdateParams{Name: ptr("")}, account.ErrInvalidName},
		{"plan", account.UpdateParams{Plan: ptr("gold")}, account.ErrUnknownPlan},
		{"status", account.UpdateParams{Status: ptr(account.Status("deleted"))}, account.ErrInvalidStatus},
		{"tz", account.UpdateParams{TimeZone: ptr("Nowhere/Land")}, account.ErrInvalidTimeZone},
		{"limits", account.UpdateParams{Limits: &account.Limits{RequestsPerMinute: -1}}, account.ErrInvalidLimits},
		{"huge limits", account.UpdateParams{Limits: &account.Limits{PromptTokensPerMinute: account.MaxPerMinute + 1}}, account.ErrInvalidLimits},
		{"good name with bad plan", account.UpdateParams{Name: ptr("New"), Plan: ptr("gold")}, account.ErrUnknownPlan},
	}
	for _, c := range badUpdates {
		if _, err := e.acc.Update(ctx(), a.ID, c.p); !errors.Is(err, c.want) {
			t.Errorf("update %s: err = %v, want %v", c.name, err, c.want)
		}
	}
	got, err := e.acc.Get(ctx(), a.ID)
	if err != nil {
		t.Fatal(err)
	}
	sameAccount(t, got, a)
	if _, err := e.acc.Update(ctx(), "acct_missing", account.UpdateParams{Name: ptr("x")}); !errors.Is(err, account.ErrNotFound) {
		t.Fatalf("update missing: %v", err)
	}
}

func testEmailUnique(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	mustCreate(t, e.acc, account.CreateParams{Name: "A", Email: "same@example.com"})
	if _, err := e.acc.Create(ctx(), account.CreateParams{Name: "B", Email: "SAME@Example.com"}); !errors.Is(err, account.ErrEmailTaken) {
		t.Fatalf("duplicate email: %v, want ErrEmailTaken", err)
	}
}

func testConcurrentSameEmail(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	const n = 24
	var (
		wg          sync.WaitGroup
		mu          sync.Mutex
		wins, taken int
		other       []error
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			email := "race@example.com"
			if i%2 == 1 {
				email = "RACE@example.com"
			}
			_, err := e.acc.Create(ctx(), account.CreateParams{Name: fmt.Sprint("racer ", i), Email: email})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errors.Is(err, account.ErrEmailTaken):
				taken++
			default:
				other = append(other, err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 || taken != n-1 || len(other) > 0 {
		t.Fatalf("wins=%d taken=%d other=%v; want exactly one winner", wins, taken, other)
	}
}

func testUpdate(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	a := mustCreate(t, e.acc, account.CreateParams{Name: "Before", Email: "u@example.com", Metadata: map[string]string{"a": "1"}})
	e.clk.Advance(time.Minute)
	got, err := e.acc.Update(ctx(), a.ID, account.UpdateParams{
		Name: ptr(" After "), Plan: ptr("enterprise"), TimeZone: ptr("America/New_York"),
		Limits: &account.Limits{RequestsPerMinute: 100_000, PromptTokensPerMinute: 50_000_000},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := a.Clone()
	want.Name, want.Plan, want.TimeZone = "After", "enterprise", "America/New_York"
	want.Limits = &account.Limits{RequestsPerMinute: 100_000, PromptTokensPerMinute: 50_000_000}
	want.UpdatedAt = epoch.Add(time.Minute)
	sameAccount(t, got, want)
	stored, err := e.acc.Get(ctx(), a.ID)
	if err != nil {
		t.Fatal(err)
	}
	sameAccount(t, stored, want)
	if l := e.acc.Catalog().EffectiveLimits(stored); l.RequestsPerMinute != 100_000 {
		t.Fatalf("effective limits %+v", l)
	}
	// Clearing the override and replacing metadata.
	got, err = e.acc.Update(ctx(), a.ID, account.UpdateParams{Limits: &account.Limits{}, Metadata: map[string]string{"b": "2"}})
	if err != nil {
		t.Fatal(err)
	}
	if got.Limits != nil || !reflect.DeepEqual(got.Metadata, map[string]string{"b": "2"}) || got.Name != "After" {
		t.Fatalf("after clear: %+v", got)
	}
	if l := e.acc.Catalog().EffectiveLimits(got); l != (account.Limits{}) { // enterprise plan: custom, no plan limits
		t.Fatalf("enterprise fallback limits %+v", l)
	}
}

func testConcurrentUpdates(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	a := mustCreate(t, e.acc, account.CreateParams{Name: "Start", Email: "cu@example.com"})
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 20 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			_, err := e.acc.Update(ctx(), a.ID, account.UpdateParams{Name: ptr(fmt.Sprint("name ", i))})
			errs <- err
		}()
		go func() {
			defer wg.Done()
			_, err := e.acc.Update(ctx(), a.ID, account.UpdateParams{TimeZone: ptr("Asia/Kolkata")})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	got, err := e.acc.Get(ctx(), a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.TimeZone != "Asia/Kolkata" || got.Name == "Start" {
		t.Fatalf("lost update: %+v", got)
	}
}

func testListPages(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	var ids []string
	for i := range 7 {
		a := mustCreate(t, e.acc, account.CreateParams{Name: fmt.Sprint("n", i), Email: fmt.Sprintf("l%d@example.com", i)})
		ids = append(ids, a.ID)
	}
	var got []string
	cursor := ""
	for pages := 0; ; pages++ {
		pg, err := e.acc.List(ctx(), account.ListParams{Cursor: cursor, Limit: 3})
		if err != nil {
			t.Fatal(err)
		}
		if pages > 3 {
			t.Fatal("too many pages")
		}
		for _, a := range pg.Accounts {
			got = append(got, a.ID)
		}
		if pg.NextCursor == "" {
			break
		}
		cursor = pg.NextCursor
	}
	if !reflect.DeepEqual(got, ids) {
		t.Fatalf("paged ids %v, want %v", got, ids)
	}
	if _, err := e.acc.List(ctx(), account.ListParams{Cursor: "garbage"}); !errors.Is(err, account.ErrInvalidCursor) {
		t.Fatalf("bad cursor: %v", err)
	}
	pg, err := e.acc.List(ctx(), account.ListParams{Limit: 10_000})
	if err != nil || len(pg.Accounts) != 7 || pg.NextCursor != "" {
		t.Fatalf("clamped list: %d %q %v", len(pg.Accounts), pg.NextCursor, err)
	}
}

func testValuesAreCopies(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	meta := map[string]string{"k": "v"}
	a := mustCreate(t, e.acc, account.CreateParams{Name: "C", Email: "c@example.com", Metadata: meta})
	meta["k"] = "changed by caller"
	a.Metadata["k"] = "changed again"
	got, err := e.acc.Get(ctx(), a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Metadata["k"] != "v" {
		t.Fatalf("stored metadata changed through caller's map: %v", got.Metadata)
	}
	got.Metadata["k"] = "x"
	again, _ := e.acc.Get(ctx(), a.ID)
	if again.Metadata["k"] != "v" {
		t.Fatal("stored metadata changed through a returned value")
	}
}

func ptr[T any](v T) *T { return &v }
