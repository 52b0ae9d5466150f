package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
)

func runAPIKeys(t *testing.T, newStore NewStoreFunc) {
	t.Run("CreateGetVerify", func(t *testing.T) { testKeyCreateGet(t, newStore) })
	t.Run("BadInputWritesNothing", func(t *testing.T) { testKeyBadInput(t, newStore) })
	t.Run("AccountIsolation", func(t *testing.T) { testKeyIsolation(t, newStore) })
	t.Run("ListPages", func(t *testing.T) { testKeyListPages(t, newStore) })
	t.Run("UpdateVisibleAtOnce", func(t *testing.T) { testKeyUpdate(t, newStore) })
	t.Run("ConcurrentUpdatesLoseNothing", func(t *testing.T) { testKeyConcurrentUpdates(t, newStore) })
	t.Run("ConcurrentRotateAndRevoke", func(t *testing.T) { testKeyConcurrentRotateRevoke(t, newStore) })
	t.Run("RevokeThenVerifyFailsNextCall", func(t *testing.T) { testKeyRevoke(t, newStore) })
	t.Run("RotateGraceWindow", func(t *testing.T) { testKeyRotate(t, newStore) })
	t.Run("Expiry", func(t *testing.T) { testKeyExpiry(t, newStore) })
	t.Run("DisableLeaked", func(t *testing.T) { testKeyDisableLeaked(t, newStore) })
	t.Run("AccountPlanAndStatus", func(t *testing.T) { testKeyAccountState(t, newStore) })
	t.Run("ConcurrentVerifyDuringRevoke", func(t *testing.T) { testKeyConcurrentRevoke(t, newStore) })
	t.Run("StaleLoadNotCachedAfterRevoke", func(t *testing.T) { testKeyStaleLoad(t, newStore) })
	t.Run("UnknownFloodReachesStoreOncePerHash", func(t *testing.T) { testKeyUnknownFlood(t, newStore) })
	t.Run("OtherProcessRevokeBound", func(t *testing.T) { testKeyCrossProcess(t, newStore) })
	t.Run("LastUsedBatched", func(t *testing.T) { testKeyLastUsed(t, newStore) })
	t.Run("ValuesAreCopies", func(t *testing.T) { testKeyCopies(t, newStore) })
}

// foriiFormat has Forii's two key types (one prefix starts the other) and
// email-verify's test keys.
func foriiFormat(t testing.TB) *apikey.Format {
	t.Helper()
	f, err := apikey.NewFormat(apikey.FormatConfig{HintChars: 6, Types: []apikey.KeyType{
		{Name: "sdk", Prefix: "forii_sk_"},
		{Name: "api", Prefix: "forii_"},
		{Name: "test", Prefix: "kw_test_", Environment: apikey.EnvTest},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// keyEnv is an env with an apikey.Service over a call-counting view of the
// store.
type keyEnv struct {
	*env
	calls *countingKeys
	keys  *apikey.Service
}

func newKeyEnv(t testing.TB, newStore NewStoreFunc, opts *apikey.Options) *keyEnv {
	t.Helper()
	e := &keyEnv{env: newEnv(t, newStore, nil)}
	e.calls = &countingKeys{Store: e.st}
	e.keys = e.service(t, opts)
	return e
}

// service returns another apikey.Service over the same store and clock,
// standing in for a second process.
func (e *keyEnv) service(t testing.TB, opts *apikey.Options) *apikey.Service {
	t.Helper()
	var o apikey.Options
	if opts != nil {
		o = *opts
	}
	o.Now = e.clk.Now
	if o.Format == nil {
		o.Format = foriiFormat(t)
	}
	svc, err := apikey.NewService(e.calls, &o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close(context.Background()) })
	return svc
}

func (e *keyEnv) account(t testing.TB, email string) account.Account {
	t.Helper()
	return mustCreate(t, e.acc, account.CreateParams{Name: email, Email: email})
}

func (e *keyEnv) create(t testing.TB, p apikey.CreateParams) (apikey.RawKey, apikey.APIKey) {
	t.Helper()
	raw, k, err := e.keys.Create(ctx(), p)
	if err != nil {
		t.Fatalf("Create(%+v): %v", p, err)
	}
	return raw, k
}

// countingKeys counts the apikey.Store calls that reach the backend. If
// afterByHash is set, APIKeyByHash calls it after reading the backend and
// before returning, which lets a test hold a lookup "in flight".
type countingKeys struct {
	apikey.Store
	all, byHash, touch, touched atomic.Int64
	afterByHash                 atomic.Pointer[func()]
}

func (c *countingKeys) CreateAPIKey(ctx context.Context, k apikey.APIKey, h [32]byte) error {
	c.all.Add(1)
	return c.Store.CreateAPIKey(ctx, k, h)
}

func (c *countingKeys) APIKey(ctx context.Context, accountID, keyID string) (apikey.APIKey, error) {
	c.all.Add(1)
	return c.Store.APIKey(ctx, accountID, keyID)
}

func (c *countingKeys) ListAPIKeys(ctx context.Context, accountID, afterID string, limit int) ([]apikey.APIKey, error) {
	c.all.Add(1)
	return c.Store.ListAPIKeys(ctx, accountID, afterID, limit)
}

func (c *countingKeys) APIKeyByHash(ctx context.Context, h [32]byte) (apikey.Match, error) {
	c.all.Add(1)
	c.byHash.Add(1)
	m, err := c.Store.APIKeyByHash(ctx, h)
	if f := c.afterByHash.Load(); f != nil {
		(*f)()
	}
	return m, err
}

func (c *countingKeys) UpdateAPIKey(ctx context.Context, accountID, keyID string, u apikey.Update, now time.Time) (apikey.APIKey, error) {
	c.all.Add(1)
	return c.Store.UpdateAPIKey(ctx, accountID, keyID, u, now)
}

func (c *countingKeys) RotateAPIKey(ctx context.Context, accountID, keyID string, r apikey.Rotation, now time.Time) (apikey.APIKey, error) {
	c.all.Add(1)
	return c.Store.RotateAPIKey(ctx, accountID, keyID, r, now)
}

func (c *countingKeys) TouchAPIKeys(ctx context.Context, uses []apikey.Use) error {
	c.all.Add(1)
	c.touch.Add(1)
	c.touched.Add(int64(len(uses)))
	return c.Store.TouchAPIKeys(ctx, uses)
}

// sameKey compares keys with times compared as instants.
func sameKey(t testing.TB, got, want apikey.APIKey) {
	t.Helper()
	norm := func(k apikey.APIKey) apikey.APIKey {
		k = k.Clone()
		for _, p := range []*time.Time{&k.CreatedAt, &k.UpdatedAt, &k.RotatedAt, &k.LastUsedAt, &k.ExpiresAt, &k.GraceUntil} {
			if !p.IsZero() {
				*p = p.UTC()
			}
		}
		return k
	}
	if g, w := norm(got), norm(want); !reflect.DeepEqual(g, w) {
		t.Fatalf("key differs:\n got %+v\nwant %+v", g, w)
	}
}

func mustVerify(t testing.TB, svc *apikey.Service, raw apikey.RawKey) apikey.Verified {
	t.Helper()
	v, err := svc.Verify(ctx(), raw)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return v
}

func wantKeyErr(t testing.TB, svc *apikey.Service, raw apikey.RawKey, want error) {
	t.Helper()
	if _, err := svc.Verify(ctx(), raw); !errors.Is(err, want) {
		t.Fatalf("Verify: %v, want %v", err, want)
	}
}

func testKeyCreateGet(t *testing.T, newStore NewStoreFunc) {
	e := newKeyEnv(t, newStore, nil)
	a := e.account(t, "keys@example.com")
	exp := epoch.Add(90 * 24 * time.Hour)
	raw, k := e.create(t, apikey.CreateParams{
		AccountID: a.ID, Name: "  prod-api ", Models: []string{"forii/deepseek-v3", "forii/deepseek-v3", "forii/llama-3"},
		Scopes: []string{"inference"}, ExpiresAt: exp, Metadata: map[string]string{"team": "ml"},
	})
	s := raw.Reveal()
	if !strings.HasPrefix(s, "forii_sk_") || len(s) != len("forii_sk_")+apikey.BodyLen+apikey.ChecksumLen {
		t.Fatalf("raw key has the wrong shape (length %d)", len(s))
	}
	want := apikey.APIKey{
		ID: k.ID, AccountID: a.ID, Name: "prod-api", Type: "sdk", Environment: apikey.EnvLive,
		Prefix: "forii_sk_", Hint: s[:len("forii_sk_")+6], Models: []string{"forii/deepseek-v3", "forii/llama-3"},
		Scopes: []string{"inference"}, Status: apikey.StatusActive, Metadata: map[string]string{"team": "ml"},
		CreatedAt: epoch, UpdatedAt: epoch, ExpiresAt: exp,
	}
	if !strings.HasPrefix(k.ID, "key_") {
		t.Fatalf("ID %q", k.ID)
	}
	sameKey(t, k, want)
	got, err := e.keys.Get(ctx(), a.ID, k.ID)
	if err != nil {
		t.Fatal(err)
	}
	sameKey(t, got, want)
	if strings.Contains(fmt.Sprintf("%+v", got), s[len("forii_sk_")+6:]) {
		t.Fatal("stored key shows more of the secret than its hint")
	}

	v := mustVerify(t, e.keys, raw)
	if v.KeyID != k.ID || v.AccountID != a.ID || v.Plan != "free" || v.Type != "sdk" || v.Environment != apikey.EnvLive ||
		!reflect.DeepEqual(v.Models, want.Models) || !reflect.DeepEqual(v.Scopes, want.Scopes) || !v.ExpiresAt.Equal(exp) {
		t.Fatalf("Verified %+v", v)
	}
	// forii_ is a prefix of forii_sk_: each key still verifies as its own type.
	rawAPI, kAPI := e.create(t, apikey.CreateParams{AccountID: a.ID, Name: "mgmt", Type: "api"})
	if !strings.HasPrefix(rawAPI.Reveal(), "forii_") || strings.HasPrefix(rawAPI.Reveal(), "forii_sk_") || kAPI.Type != "api" {
		t.Fatalf("api key %+v", kAPI)
	}
	if v := mustVerify(t, e.keys, rawAPI); v.Type != "api" || v.KeyID != kAPI.ID {
		t.Fatalf("api key verified as %+v", v)
	}
	rawTest, kTest := e.create(t, apikey.CreateParams{AccountID: a.ID, Name: "dev", Type: "test"})
	if v := mustVerify(t, e.keys, rawTest); v.Environment != apikey.EnvTest || kTest.Environment != apikey.EnvTest {
		t.Fatalf("test key verified as %+v", v)
	}
	// A second Service reads the same keys (no shared cache).
	mustVerify(t, e.service(t, nil), raw)

	pg, err := e.keys.List(ctx(), a.ID, apikey.ListParams{})
	if err != nil || len(pg.Keys) != 3 || pg.NextCursor != "" {
		t.Fatalf("List = %d keys, %q, %v", len(pg.Keys), pg.NextCursor, err)
	}
	sameKey(t, pg.Keys[0], want)
	if pg.Keys[1].ID != kAPI.ID || pg.Keys[2].ID != kTest.ID {
		t.Fatal("List is not in creation order")
	}

	// IDs with OpenRush's prefix.
	or := e.service(t, &apikey.Options{IDPrefix: "cred_"})
	_, c, err := or.Create(ctx(), apikey.CreateParams{AccountID: a.ID, Name: "Production server"})
	if err != nil || !strings.HasPrefix(c.ID, "cred_") {
		t.Fatalf("cred key %q, %v", c.ID, err)
	}
}

func testKeyBadInput(t *testing.T, newStore NewStoreFunc) {
	e := newKeyEnv(t, newStore, nil)
	a := e.account(t, "bad@example.com")
	good := apikey.CreateParams{AccountID: a.ID, Name: "ok"}
	cases := []struct {
		name string
		mod  func(*apikey.CreateParams)
		want error
	}{
		{"empty name", func(p *apikey.CreateParams) { p.Name = " \t" }, apikey.ErrInvalidName},
		{"long name", func(p *apikey.CreateParams) { p.Name = strings.Repeat("ñ", 121) }, apikey.ErrInvalidName},
		{"control char", func(p *apikey.CreateParams) { p.Name = "a\nb" }, apikey.ErrInvalidName},
		{"invalid utf8", func(p *apikey.CreateParams) { p.Name = "\xff" }, apikey.ErrInvalidName},
		{"unknown type", func(p *apikey.CreateParams) { p.Type = "admin" }, apikey.ErrInvalidType},
		{"empty model", func(p *apikey.CreateParams) { p.Models = []string{""} }, apikey.ErrInvalidModels},
		{"model with space", func(p *apikey.CreateParams) { p.Models = []string{"gpt 4"} }, apikey.ErrInvalidModels},
		{"unknown scope", func(p *apikey.CreateParams) { p.Scopes = []string{"root"} }, apikey.ErrInvalidScopes},
		{"expiry now", func(p *apikey.CreateParams) { p.ExpiresAt = epoch }, apikey.ErrInvalidExpiry},
		{"expiry past", func(p *apikey.CreateParams) { p.ExpiresAt = epoch.Add(-time.Hour) }, apikey.ErrInvalidExpiry},
		{"expiry after 2200", func(p *apikey.CreateParams) { p.ExpiresAt = time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC) }, apikey.ErrInvalidExpiry},
		{"bad metadata", func(p *apikey.CreateParams) { p.Metadata = map[string]string{"": "x"} }, apikey.ErrInvalidMetadata},
		{"unknown account", func(p *apikey.CreateParams) { p.AccountID = "acct_missing" }, apikey.ErrAccountNotFound},
		{"no account", func(p *apikey.CreateParams) { p.AccountID = "" }, apikey.ErrAccountNotFound},
	}
	for _, c := range cases {
		p := good
		c.mod(&p)
		if _, _, err := e.keys.Create(ctx(), p); !errors.Is(err, c.want) {
			t.Errorf("%s: err = %v, want %v", c.name, err, c.want)
		}
	}
	if pg, err := e.keys.List(ctx(), a.ID, apikey.ListParams{}); err != nil || len(pg.Keys) != 0 {
		t.Fatalf("bad input wrote keys: %v %v", pg.Keys, err)
	}
	_, k := e.create(t, good)
	past := epoch.Add(-time.Second)
	for _, c := range []struct {
		name string
		p    apikey.UpdateParams
		want error
	}{
		{"name", apikey.UpdateParams{Name: ptr("")}, apikey.ErrInvalidName},
		{"models", apikey.UpdateParams{Models: &[]string{"ok", "\x00"}}, apikey.ErrInvalidModels},
		{"scopes", apikey.UpdateParams{Scopes: &[]string{"Inference"}}, apikey.ErrInvalidScopes},
		{"expiry", apikey.UpdateParams{ExpiresAt: &past}, apikey.ErrInvalidExpiry},
		{"good name with bad scopes", apikey.UpdateParams{Name: ptr("new"), Scopes: &[]string{"x"}}, apikey.ErrInvalidScopes},
	} {
		if _, err := e.keys.Update(ctx(), a.ID, k.ID, c.p); !errors.Is(err, c.want) {
			t.Errorf("update %s: %v, want %v", c.name, err, c.want)
		}
	}
	got, err := e.keys.Get(ctx(), a.ID, k.ID)
	if err != nil {
		t.Fatal(err)
	}
	sameKey(t, got, k)
	if _, _, err := e.keys.Rotate(ctx(), a.ID, k.ID, -time.Second); !errors.Is(err, apikey.ErrInvalidGrace) {
		t.Fatalf("negative grace: %v", err)
	}
	if _, err := e.keys.List(ctx(), a.ID, apikey.ListParams{Cursor: "garbage"}); !errors.Is(err, apikey.ErrInvalidCursor) {
		t.Fatalf("bad cursor: %v", err)
	}
}

// testKeyIsolation: every call that takes an account ID treats another
// account's key as missing and changes nothing.
func testKeyIsolation(t *testing.T, newStore NewStoreFunc) {
	e := newKeyEnv(t, newStore, nil)
	a, b := e.account(t, "a@example.com"), e.account(t, "b@example.com")
	raw, k := e.create(t, apikey.CreateParams{AccountID: a.ID, Name: "A's key"})
	_, kb := e.create(t, apikey.CreateParams{AccountID: b.ID, Name: "B's key"})
	calls := []struct {
		name string
		call func() error
	}{
		{"Get", func() error { _, err := e.keys.Get(ctx(), b.ID, k.ID); return err }},
		{"Update", func() error {
			_, err := e.keys.Update(ctx(), b.ID, k.ID, apikey.UpdateParams{Name: ptr("stolen")})
			return err
		}},
		{"Revoke", func() error { _, err := e.keys.Revoke(ctx(), b.ID, k.ID); return err }},
		{"Expire", func() error { _, err := e.keys.Expire(ctx(), b.ID, k.ID); return err }},
		{"Rotate", func() error { _, _, err := e.keys.Rotate(ctx(), b.ID, k.ID, time.Hour); return err }},
	}
	for _, c := range calls {
		if err := c.call(); !errors.Is(err, apikey.ErrNotFound) {
			t.Errorf("%s with account B: %v, want ErrNotFound", c.name, err)
		}
	}
	pg, err := e.keys.List(ctx(), b.ID, apikey.ListParams{})
	if err != nil || len(pg.Keys) != 1 || pg.Keys[0].ID != kb.ID {
		t.Fatalf("B lists %+v, %v", pg.Keys, err)
	}
	// A cursor taken from A's keys does not open A's list to B.
	pg, err = e.keys.List(ctx(), b.ID, apikey.ListParams{Cursor: k.ID})
	if err != nil || len(pg.Keys) != 1 || pg.Keys[0].ID != kb.ID {
		t.Fatalf("B lists after A's cursor %+v, %v", pg.Keys, err)
	}
	got, err := e.keys.Get(ctx(), a.ID, k.ID)
	if err != nil {
		t.Fatal(err)
	}
	sameKey(t, got, k)
	if v := mustVerify(t, e.keys, raw); v.AccountID != a.ID {
		t.Fatalf("verified as %s", v.AccountID)
	}
	if _, err := e.keys.Get(ctx(), a.ID, "key_missing"); !errors.Is(err, apikey.ErrNotFound) {
		t.Fatalf("Get missing: %v", err)
	}
}

func testKeyListPages(t *testing.T, newStore NewStoreFunc) {
	e := newKeyEnv(t, newStore, nil)
	a, other := e.account(t, "l@example.com"), e.account(t, "o@example.com")
	var ids []string
	for i := range 7 {
		_, k := e.create(t, apikey.CreateParams{AccountID: a.ID, Name: fmt.Sprint("k", i)})
		ids = append(ids, k.ID)
		e.create(t, apikey.CreateParams{AccountID: other.ID, Name: fmt.Sprint("o", i)})
	}
	var got []string
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 3 {
			t.Fatal("too many pages")
		}
		pg, err := e.keys.List(ctx(), a.ID, apikey.ListParams{Cursor: cursor, Limit: 3})
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range pg.Keys {
			got = append(got, k.ID)
		}
		if pg.NextCursor == "" {
			break
		}
		cursor = pg.NextCursor
	}
	if !reflect.DeepEqual(got, ids) {
		t.Fatalf("paged %v, want %v", got, ids)
	}
	pg, err := e.keys.List(ctx(), a.ID, apikey.ListParams{Limit: 10_000})
	if err != nil || len(pg.Keys) != 7 {
		t.Fatalf("clamped list: %d, %v", len(pg.Keys), err)
	}
}

func testKeyUpdate(t *testing.T, newStore NewStoreFunc) {
	e := newKeyEnv(t, newStore, nil)
	a := e.account(t, "u@example.com")
	raw, k := e.create(t, apikey.CreateParams{AccountID: a.ID, Name: "before", Models: []string{"m1"}, Scopes: []string{"read"}})
	v := mustVerify(t, e.keys, raw) // cached from here on
	if err := v.Permit("m1", "read"); err != nil {
		t.Fatal(err)
	}
	if err := v.Permit("m2", ""); !errors.Is(err, apikey.ErrModelNotAllowed) {
		t.Fatalf("Permit m2: %v", err)
	}
	if err := v.Permit("", "inference"); !errors.Is(err, apikey.ErrScopeNotAllowed) {
		t.Fatalf("Permit inference: %v", err)
	}
	e.clk.Advance(time.Minute)
	exp := epoch.Add(time.Hour)
	got, err := e.keys.Update(ctx(), a.ID, k.ID, apikey.UpdateParams{
		Name: ptr(" after "), Models: &[]string{"m2"}, Scopes: &[]string{"inference", "read"}, ExpiresAt: &exp,
		Metadata: map[string]string{"edited": "yes"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := k.Clone()
	want.Name, want.Models, want.Scopes, want.ExpiresAt = "after", []string{"m2"}, []string{"inference", "read"}, exp
	want.Metadata, want.UpdatedAt = map[string]string{"edited": "yes"}, epoch.Add(time.Minute)
	sameKey(t, got, want)
	stored, err := e.keys.Get(ctx(), a.ID, k.ID)
	if err != nil {
		t.Fatal(err)
	}
	sameKey(t, stored, want)
	v = mustVerify(t, e.keys, raw) // the very next call sees the change
	if err := v.Permit("m2", "inference"); err != nil {
		t.Fatalf("after update: %v", err)
	}
	if err := v.Permit("m1", ""); !errors.Is(err, apikey.ErrModelNotAllowed) {
		t.Fatalf("m1 after update: %v", err)
	}
	// Empty lists allow everything; a zero expiry removes it.
	got, err = e.keys.Update(ctx(), a.ID, k.ID, apikey.UpdateParams{Models: &[]string{}, Scopes: &[]string{}, ExpiresAt: &time.Time{}})
	if err != nil || got.Models != nil || got.Scopes != nil || !got.ExpiresAt.IsZero() || got.Name != "after" {
		t.Fatalf("cleared: %+v, %v", got, err)
	}
	v = mustVerify(t, e.keys, raw)
	if err := v.Permit("anything", "manage"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.keys.Update(ctx(), a.ID, "key_missing", apikey.UpdateParams{Name: ptr("x")}); !errors.Is(err, apikey.ErrNotFound) {
		t.Fatalf("update missing: %v", err)
	}
}

func testKeyConcurrentUpdates(t *testing.T, newStore NewStoreFunc) {
	e := newKeyEnv(t, newStore, nil)
	a := e.account(t, "cu@example.com")
	_, k := e.create(t, apikey.CreateParams{AccountID: a.ID, Name: "start"})
	var wg sync.WaitGroup
	errs := make(chan error, 60)
	for i := range 20 {
		wg.Add(3)
		go func() {
			defer wg.Done()
			_, err := e.keys.Update(ctx(), a.ID, k.ID, apikey.UpdateParams{Name: ptr(fmt.Sprint("name ", i))})
			errs <- err
		}()
		go func() {
			defer wg.Done()
			_, err := e.keys.Update(ctx(), a.ID, k.ID, apikey.UpdateParams{Models: &[]string{"m"}})
			errs <- err
		}()
		go func() {
			defer wg.Done()
			_, err := e.keys.Update(ctx(), a.ID, k.ID, apikey.UpdateParams{Scopes: &[]string{"read"}})
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
	got, err := e.keys.Get(ctx(), a.ID, k.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Name == "start" || !reflect.DeepEqual(got.Models, []string{"m"}) || !reflect.DeepEqual(got.Scopes, []string{"read"}) {
		t.Fatalf("lost update: %+v", got)
	}
}

// testKeyConcurrentRotateRevoke: rotations racing a revocation leave a
// revoked key, and no secret handed out by any rotation verifies.
func testKeyConcurrentRotateRevoke(t *testing.T, newStore NewStoreFunc) {
	e := newKeyEnv(t, newStore, nil)
	a := e.account(t, "rr@example.com")
	first, k := e.create(t, apikey.CreateParams{AccountID: a.ID, Name: "contested"})
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		secrets = []apikey.RawKey{first}
		errs    = make(chan error, 16)
	)
	for i := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i == 6 {
				_, err := e.keys.Revoke(ctx(), a.ID, k.ID)
				errs <- err
				return
			}
			raw, _, err := e.keys.Rotate(ctx(), a.ID, k.ID, time.Hour)
			switch {
			case err == nil:
				mu.Lock()
				secrets = append(secrets, raw)
				mu.Unlock()
			case !errors.Is(err, apikey.ErrRevoked):
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got, _ := e.keys.Get(ctx(), a.ID, k.ID); got.Status != apikey.StatusRevoked {
		t.Fatalf("status %q after the race", got.Status)
	}
	for _, svc := range []*apikey.Service{e.keys, e.service(t, nil)} {
		for _, raw := range secrets {
			if _, err := svc.Verify(ctx(), raw); err == nil {
				t.Fatal("a secret of a revoked key verifies")
			}
		}
	}
}

func testKeyRevoke(t *testing.T, newStore NewStoreFunc) {
	e := newKeyEnv(t, newStore, nil)
	a := e.account(t, "r@example.com")
	raw, k := e.create(t, apikey.CreateParams{AccountID: a.ID, Name: "doomed"})
	mustVerify(t, e.keys, raw)
	mustVerify(t, e.keys, raw) // cached
	got, err := e.keys.Revoke(ctx(), a.ID, k.ID)
	if err != nil || got.Status != apikey.StatusRevoked {
		t.Fatalf("Revoke = %+v, %v", got, err)
	}
	wantKeyErr(t, e.keys, raw, apikey.ErrRevoked)
	wantKeyErr(t, e.service(t, nil), raw, apikey.ErrRevoked)
	if got, _ := e.keys.Get(ctx(), a.ID, k.ID); got.Status != apikey.StatusRevoked {
		t.Fatalf("stored status %q", got.Status)
	}
	if _, err := e.keys.Revoke(ctx(), a.ID, k.ID); err != nil {
		t.Fatalf("second revoke: %v", err)
	}
	if _, _, err := e.keys.Rotate(ctx(), a.ID, k.ID, time.Hour); !errors.Is(err, apikey.ErrRevoked) {
		t.Fatalf("rotate revoked: %v", err)
	}
	// Revoked is final: neither a leak report nor an update brings it back.
	if k2, known, err := e.keys.DisableLeaked(ctx(), raw); err != nil || !known || k2.Status != apikey.StatusRevoked {
		t.Fatalf("DisableLeaked revoked = %+v %v %v", k2, known, err)
	}
	if _, err := e.keys.Update(ctx(), a.ID, k.ID, apikey.UpdateParams{Name: ptr("renamed")}); err != nil {
		t.Fatal(err)
	}
	wantKeyErr(t, e.keys, raw, apikey.ErrRevoked)
	if _, err := e.keys.Revoke(ctx(), a.ID, "key_missing"); !errors.Is(err, apikey.ErrNotFound) {
		t.Fatalf("revoke missing: %v", err)
	}
}

func testKeyRotate(t *testing.T, newStore NewStoreFunc) {
	e := newKeyEnv(t, newStore, nil)
	a := e.account(t, "rot@example.com")
	exp := epoch.Add(48 * time.Hour)
	old, k := e.create(t, apikey.CreateParams{AccountID: a.ID, Name: "rotating", Models: []string{"m"}, ExpiresAt: exp})
	mustVerify(t, e.keys, old) // cached before the rotation
	e.clk.Advance(time.Minute)
	now := e.clk.Now()
	nw, got, err := e.keys.Rotate(ctx(), a.ID, k.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != k.ID || got.Hint == k.Hint || !strings.HasPrefix(nw.Reveal(), got.Hint) ||
		!got.RotatedAt.Equal(now) || !got.GraceUntil.Equal(now.Add(time.Hour)) || !reflect.DeepEqual(got.Models, k.Models) {
		t.Fatalf("rotated %+v", got)
	}
	other := e.service(t, nil) // another process, nothing cached
	for _, svc := range []*apikey.Service{e.keys, other} {
		vo, vn := mustVerify(t, svc, old), mustVerify(t, svc, nw)
		if vo.KeyID != k.ID || vn.KeyID != k.ID || !vo.ExpiresAt.Equal(now.Add(time.Hour)) || !vn.ExpiresAt.Equal(exp) {
			t.Fatalf("inside grace: old %+v new %+v", vo, vn)
		}
	}
	e.clk.Advance(time.Hour - time.Nanosecond)
	mustVerify(t, e.keys, old)
	e.clk.Advance(time.Nanosecond)
	for _, svc := range []*apikey.Service{e.keys, other, e.service(t, nil)} {
		wantKeyErr(t, svc, old, apikey.ErrExpired)
		mustVerify(t, svc, nw)
	}
	if g, _ := e.keys.Get(ctx(), a.ID, k.ID); !g.GraceUntil.IsZero() {
		t.Fatalf("grace shown after it ended: %v", g.GraceUntil)
	}

	// Rotating without grace ends the current secret at once.
	nw2, _, err := e.keys.Rotate(ctx(), a.ID, k.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	wantKeyErr(t, e.keys, nw, apikey.ErrUnknown)
	wantKeyErr(t, e.keys, old, apikey.ErrUnknown)
	mustVerify(t, e.keys, nw2)

	// Rotating again within a grace period ends the older secret at once.
	nw3, _, err := e.keys.Rotate(ctx(), a.ID, k.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	nw4, _, err := e.keys.Rotate(ctx(), a.ID, k.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	wantKeyErr(t, e.keys, nw2, apikey.ErrUnknown)
	mustVerify(t, e.keys, nw3)
	mustVerify(t, e.keys, nw4)

	// The grace period never outlives the key.
	e.clk.Set(exp.Add(-10 * time.Minute))
	nw5, got, err := e.keys.Rotate(ctx(), a.ID, k.ID, time.Hour)
	if err != nil || !got.GraceUntil.Equal(exp) {
		t.Fatalf("grace past expiry: %v, %v", got.GraceUntil, err)
	}
	e.clk.Set(exp)
	wantKeyErr(t, e.keys, nw4, apikey.ErrExpired)
	wantKeyErr(t, e.keys, nw5, apikey.ErrExpired)
	if _, _, err := e.keys.Rotate(ctx(), a.ID, k.ID, time.Hour); !errors.Is(err, apikey.ErrExpired) {
		t.Fatalf("rotate expired: %v", err)
	}
	if _, _, err := e.keys.Rotate(ctx(), a.ID, "key_missing", time.Hour); !errors.Is(err, apikey.ErrNotFound) {
		t.Fatalf("rotate missing: %v", err)
	}
}

func testKeyExpiry(t *testing.T, newStore NewStoreFunc) {
	e := newKeyEnv(t, newStore, nil)
	a := e.account(t, "exp@example.com")
	raw, k := e.create(t, apikey.CreateParams{AccountID: a.ID, Name: "short-lived", ExpiresAt: epoch.Add(time.Hour)})
	mustVerify(t, e.keys, raw)
	e.clk.Advance(time.Hour - time.Nanosecond)
	mustVerify(t, e.keys, raw)
	e.clk.Advance(time.Nanosecond)
	wantKeyErr(t, e.keys, raw, apikey.ErrExpired)            // from the cache
	wantKeyErr(t, e.service(t, nil), raw, apikey.ErrExpired) // from the store
	if g, _ := e.keys.Get(ctx(), a.ID, k.ID); g.Status != apikey.StatusExpired {
		t.Fatalf("status %q, want expired", g.Status)
	}
	// Expire ends a key now.
	raw2, k2 := e.create(t, apikey.CreateParams{AccountID: a.ID, Name: "ended"})
	mustVerify(t, e.keys, raw2)
	got, err := e.keys.Expire(ctx(), a.ID, k2.ID)
	if err != nil || got.Status != apikey.StatusExpired || !got.ExpiresAt.Equal(e.clk.Now()) {
		t.Fatalf("Expire = %+v, %v", got, err)
	}
	wantKeyErr(t, e.keys, raw2, apikey.ErrExpired)
	if pg, _ := e.keys.List(ctx(), a.ID, apikey.ListParams{}); len(pg.Keys) != 2 || pg.Keys[1].Status != apikey.StatusExpired {
		t.Fatalf("List statuses %+v", pg.Keys)
	}
}

func testKeyDisableLeaked(t *testing.T, newStore NewStoreFunc) {
	e := newKeyEnv(t, newStore, nil)
	a := e.account(t, "leak@example.com")
	raw, k := e.create(t, apikey.CreateParams{AccountID: a.ID, Name: "leaky"})
	mustVerify(t, e.keys, raw)
	got, known, err := e.keys.DisableLeaked(ctx(), raw)
	if err != nil || !known || got.ID != k.ID || got.Status != apikey.StatusDisabled {
		t.Fatalf("DisableLeaked = %+v %v %v", got, known, err)
	}
	wantKeyErr(t, e.keys, raw, apikey.ErrDisabled)
	wantKeyErr(t, e.service(t, nil), raw, apikey.ErrDisabled)
	if _, _, err := e.keys.Rotate(ctx(), a.ID, k.ID, time.Hour); !errors.Is(err, apikey.ErrDisabled) {
		t.Fatalf("rotate disabled: %v", err)
	}
	if got, err := e.keys.Revoke(ctx(), a.ID, k.ID); err != nil || got.Status != apikey.StatusRevoked {
		t.Fatalf("revoke disabled: %+v %v", got, err)
	}
	unknown, err := e.keys.Format().Generate("")
	if err != nil {
		t.Fatal(err)
	}
	if _, known, err := e.keys.DisableLeaked(ctx(), unknown); known || err != nil {
		t.Fatalf("unknown key: known=%v err=%v", known, err)
	}
	if _, _, err := e.keys.DisableLeaked(ctx(), "forii_sk_not-a-key"); !errors.Is(err, apikey.ErrMalformed) {
		t.Fatalf("malformed: %v", err)
	}
	// A leaked previous secret ends the grace period; the new secret lives on.
	old, k2 := e.create(t, apikey.CreateParams{AccountID: a.ID, Name: "rotated"})
	nw, _, err := e.keys.Rotate(ctx(), a.ID, k2.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	mustVerify(t, e.keys, old)
	got, known, err = e.keys.DisableLeaked(ctx(), old)
	if err != nil || !known || got.Status != apikey.StatusActive || !got.GraceUntil.IsZero() {
		t.Fatalf("leaked previous secret: %+v %v %v", got, known, err)
	}
	wantKeyErr(t, e.keys, old, apikey.ErrUnknown)
	mustVerify(t, e.keys, nw)
}

func testKeyAccountState(t *testing.T, newStore NewStoreFunc) {
	e := newKeyEnv(t, newStore, nil)
	a := e.account(t, "acct@example.com")
	raw, _ := e.create(t, apikey.CreateParams{AccountID: a.ID, Name: "k"})
	if v := mustVerify(t, e.keys, raw); v.Plan != "free" {
		t.Fatalf("plan %q", v.Plan)
	}
	if _, err := e.acc.Update(ctx(), a.ID, account.UpdateParams{Plan: ptr("pro")}); err != nil {
		t.Fatal(err)
	}
	e.keys.InvalidateAccount(a.ID)
	if v := mustVerify(t, e.keys, raw); v.Plan != "pro" {
		t.Fatalf("plan after change %q", v.Plan)
	}
	if _, err := e.acc.Update(ctx(), a.ID, account.UpdateParams{Status: ptr(account.StatusSuspended)}); err != nil {
		t.Fatal(err)
	}
	e.keys.InvalidateAccount(a.ID)
	wantKeyErr(t, e.keys, raw, apikey.ErrAccountInactive)
	if _, err := e.acc.Update(ctx(), a.ID, account.UpdateParams{Status: ptr(account.StatusActive)}); err != nil {
		t.Fatal(err)
	}
	e.keys.InvalidateAccount(a.ID)
	mustVerify(t, e.keys, raw)
	// Without InvalidateAccount (a change made elsewhere) the refresh
	// interval bounds how long the old state is served.
	if _, err := e.acc.Update(ctx(), a.ID, account.UpdateParams{Status: ptr(account.StatusClosed)}); err != nil {
		t.Fatal(err)
	}
	e.clk.Advance(5 * time.Second)
	wantKeyErr(t, e.keys, raw, apikey.ErrAccountInactive)
	if apikey.AccountActive != string(account.StatusActive) {
		t.Fatal("apikey.AccountActive no longer matches account.StatusActive")
	}
}

// testKeyConcurrentRevoke hammers Verify from many goroutines while the
// clock moves (so verifies keep missing the cache and reading the store)
// and revokes; no Verify that starts after Revoke returned may succeed.
func testKeyConcurrentRevoke(t *testing.T, newStore NewStoreFunc) {
	e := newKeyEnv(t, newStore, &apikey.Options{RefreshInterval: time.Millisecond})
	a := e.account(t, "race@example.com")
	const rounds, workers = 20, 6
	for round := range rounds {
		raw, k := e.create(t, apikey.CreateParams{AccountID: a.ID, Name: fmt.Sprint("race ", round)})
		var (
			revoked   atomic.Bool
			successes atomic.Int64
			wg        sync.WaitGroup
			stop      = make(chan struct{})
			bad       = make(chan error, workers)
		)
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					after := revoked.Load()
					_, err := e.keys.Verify(ctx(), raw)
					switch {
					case err == nil && after:
						bad <- fmt.Errorf("round %d: Verify succeeded after Revoke returned", round)
						return
					case err == nil:
						successes.Add(1)
					case !errors.Is(err, apikey.ErrRevoked):
						bad <- err
						return
					}
				}
			}()
		}
		wg.Add(1)
		go func() { // keep entries expiring so verifies race with the store
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
					e.clk.Advance(time.Millisecond)
				}
			}
		}()
		for successes.Load() < 20 {
			if len(bad) > 0 {
				break
			}
			time.Sleep(0) // yield until the workers are running; no timing assumption
		}
		if _, err := e.keys.Revoke(ctx(), a.ID, k.ID); err != nil {
			t.Fatal(err)
		}
		revoked.Store(true)
		for range 200 { // the next calls of this goroutine, too
			if _, err := e.keys.Verify(ctx(), raw); !errors.Is(err, apikey.ErrRevoked) {
				t.Fatalf("round %d: Verify after Revoke: %v", round, err)
			}
		}
		close(stop)
		wg.Wait()
		close(bad)
		for err := range bad {
			t.Fatal(err)
		}
	}
}

// testKeyStaleLoad makes the race of testKeyConcurrentRevoke happen every
// time: a Verify reads the key from the store while it is active, Revoke
// runs to completion, and only then does that Verify get to fill the cache.
// The next Verify must still fail.
func testKeyStaleLoad(t *testing.T, newStore NewStoreFunc) {
	e := newKeyEnv(t, newStore, nil)
	a := e.account(t, "stale@example.com")
	raw, k := e.create(t, apikey.CreateParams{AccountID: a.ID, Name: "stale"})
	loaded, resume := make(chan struct{}), make(chan struct{})
	var once sync.Once
	hook := func() { once.Do(func() { close(loaded); <-resume }) }
	e.calls.afterByHash.Store(&hook)
	done := make(chan error, 1)
	go func() {
		_, err := e.keys.Verify(ctx(), raw) // started before Revoke: may succeed
		done <- err
	}()
	<-loaded // the lookup has read the active key and is paused
	e.calls.afterByHash.Store(nil)
	if _, err := e.keys.Revoke(ctx(), a.ID, k.ID); err != nil {
		t.Fatal(err)
	}
	close(resume) // the stale lookup now tries to cache what it read
	if err := <-done; err != nil {
		t.Fatalf("in-flight Verify: %v", err)
	}
	wantKeyErr(t, e.keys, raw, apikey.ErrRevoked)
}

func testKeyUnknownFlood(t *testing.T, newStore NewStoreFunc) {
	e := newKeyEnv(t, newStore, nil)
	a := e.account(t, "flood@example.com")
	raw, _ := e.create(t, apikey.CreateParams{AccountID: a.ID, Name: "real"})
	f := e.keys.Format()
	var forged []apikey.RawKey
	for range 50 {
		k, err := f.Generate("sdk")
		if err != nil {
			t.Fatal(err)
		}
		forged = append(forged, k)
	}
	start := e.calls.byHash.Load()
	for range 5 {
		for _, k := range forged {
			wantKeyErr(t, e.keys, k, apikey.ErrUnknown)
		}
	}
	if n := e.calls.byHash.Load() - start; n != int64(len(forged)) {
		t.Fatalf("%d store lookups for %d unknown keys tried 5 times each; want one per hash", n, len(forged))
	}
	// Malformed keys never reach the store.
	bad := []byte(raw.Reveal())
	bad[len(bad)-1] ^= 1 // wrong checksum
	start = e.calls.all.Load()
	for _, k := range []string{string(bad), "", "forii_sk_", "sk-" + raw.Reveal()[3:], raw.Reveal() + "x", strings.ToUpper(raw.Reveal())} {
		wantKeyErr(t, e.keys, apikey.RawKey(k), apikey.ErrMalformed)
	}
	if n := e.calls.all.Load() - start; n != 0 {
		t.Fatalf("malformed keys made %d store calls", n)
	}
	if st := e.keys.Stats(); st.CachedUnknown != len(forged) {
		t.Fatalf("negative cache holds %d, want %d", st.CachedUnknown, len(forged))
	}
}

func testKeyCrossProcess(t *testing.T, newStore NewStoreFunc) {
	e := newKeyEnv(t, newStore, &apikey.Options{RefreshInterval: 5 * time.Second})
	a := e.account(t, "x@example.com")
	raw, k := e.create(t, apikey.CreateParams{AccountID: a.ID, Name: "shared"})
	mustVerify(t, e.keys, raw) // cached here
	uncached := e.service(t, &apikey.Options{RefreshInterval: -1})
	other := e.service(t, nil)
	if _, err := other.Revoke(ctx(), a.ID, k.ID); err != nil {
		t.Fatal(err)
	}
	wantKeyErr(t, uncached, raw, apikey.ErrRevoked)
	wantKeyErr(t, other, raw, apikey.ErrRevoked)
	// e.keys may serve its cached copy for at most RefreshInterval.
	e.clk.Advance(5 * time.Second)
	wantKeyErr(t, e.keys, raw, apikey.ErrRevoked)
}

func testKeyLastUsed(t *testing.T, newStore NewStoreFunc) {
	e := newKeyEnv(t, newStore, &apikey.Options{LastUsedInterval: time.Minute})
	a := e.account(t, "used@example.com")
	raw1, k1 := e.create(t, apikey.CreateParams{AccountID: a.ID, Name: "busy"})
	raw2, k2 := e.create(t, apikey.CreateParams{AccountID: a.ID, Name: "quiet"})
	_, k3 := e.create(t, apikey.CreateParams{AccountID: a.ID, Name: "unused"})
	for i := range 100 {
		mustVerify(t, e.keys, raw1)
		if i == 50 {
			e.clk.Advance(10 * time.Second)
		}
	}
	mustVerify(t, e.keys, raw2)
	if e.calls.touch.Load() != 0 {
		t.Fatal("Verify wrote last_used_at synchronously")
	}
	if err := e.keys.FlushLastUsed(ctx()); err != nil {
		t.Fatal(err)
	}
	if c, n := e.calls.touch.Load(), e.calls.touched.Load(); c != 1 || n != 2 {
		t.Fatalf("flush made %d store calls for %d keys; want 1 call for 2 keys", c, n)
	}
	lastUsed := func(id string) time.Time {
		k, err := e.keys.Get(ctx(), a.ID, id)
		if err != nil {
			t.Fatal(err)
		}
		return k.LastUsedAt
	}
	if got := lastUsed(k1.ID); !got.Equal(epoch.Add(10 * time.Second)) {
		t.Fatalf("busy key last used %v, want %v", got, epoch.Add(10*time.Second))
	}
	if got := lastUsed(k2.ID); !got.Equal(epoch.Add(10 * time.Second)) {
		t.Fatalf("quiet key last used %v", got)
	}
	if got := lastUsed(k3.ID); !got.IsZero() {
		t.Fatalf("unused key last used %v", got)
	}
	if err := e.keys.FlushLastUsed(ctx()); err != nil || e.calls.touch.Load() != 1 {
		t.Fatalf("empty flush wrote: %v", err)
	}
	e.clk.Advance(time.Minute)
	mustVerify(t, e.keys, raw1)
	if err := e.keys.Close(ctx()); err != nil { // Close flushes
		t.Fatal(err)
	}
	if got := lastUsed(k1.ID); !got.Equal(epoch.Add(70 * time.Second)) {
		t.Fatalf("after Close, busy key last used %v", got)
	}
	// The store never moves last_used_at backwards and ignores unknown keys.
	if err := e.st.TouchAPIKeys(ctx(), []apikey.Use{{KeyID: k1.ID, At: epoch}, {KeyID: "key_missing", At: epoch}}); err != nil {
		t.Fatal(err)
	}
	if got := lastUsed(k1.ID); !got.Equal(epoch.Add(70 * time.Second)) {
		t.Fatalf("last_used_at moved back to %v", got)
	}
}

func testKeyCopies(t *testing.T, newStore NewStoreFunc) {
	e := newKeyEnv(t, newStore, nil)
	a := e.account(t, "copy@example.com")
	models := []string{"m1", "m2"}
	meta := map[string]string{"k": "v"}
	raw, k := e.create(t, apikey.CreateParams{AccountID: a.ID, Name: "c", Models: models, Metadata: meta})
	models[0], meta["k"] = "changed", "changed"
	k.Models[1], k.Metadata["k"] = "changed", "changed"
	got, err := e.keys.Get(ctx(), a.ID, k.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Models, []string{"m1", "m2"}) || got.Metadata["k"] != "v" {
		t.Fatalf("stored key changed through the caller's values: %+v", got)
	}
	got.Models[0] = "x"
	again, _ := e.keys.Get(ctx(), a.ID, k.ID)
	if again.Models[0] != "m1" {
		t.Fatal("stored key changed through a returned value")
	}
	v := mustVerify(t, e.keys, raw)
	if err := v.Permit("m1", ""); err != nil {
		t.Fatal(err)
	}
}
