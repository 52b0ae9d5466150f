package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/keyledger/keyledger/account"
)

func runSessions(t *testing.T, newStore NewStoreFunc) {
	t.Run("LoginVerifyLogout", func(t *testing.T) { testLoginVerifyLogout(t, newStore) })
	t.Run("LoginFailures", func(t *testing.T) { testLoginFailures(t, newStore) })
	t.Run("Expiry", func(t *testing.T) { testSessionExpiry(t, newStore) })
	t.Run("StatusChanges", func(t *testing.T) { testSessionStatus(t, newStore) })
	t.Run("PasswordChangeRevokes", func(t *testing.T) { testPasswordChange(t, newStore) })
	t.Run("RehashOnParameterChange", func(t *testing.T) { testRehash(t, newStore) })
	t.Run("OtherProcessLogoutBound", func(t *testing.T) { testCrossProcessLogout(t, newStore) })
}

func login(t testing.TB, svc *account.Service, email, pw string) (account.Secret, account.Session) {
	t.Helper()
	tok, sess, err := svc.Login(ctx(), email, account.Secret(pw))
	if err != nil {
		t.Fatalf("Login(%s): %v", email, err)
	}
	return tok, sess
}

func wantVerifyErr(t testing.TB, svc *account.Service, tok account.Secret, want error) {
	t.Helper()
	if _, err := svc.VerifySession(ctx(), tok); !errors.Is(err, want) {
		t.Fatalf("VerifySession: %v, want %v", err, want)
	}
}

func testLoginVerifyLogout(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	a := mustCreate(t, e.acc, account.CreateParams{Name: "S", Email: "s@example.com", Password: "hunter2hunter2"})
	tok, sess := login(t, e.acc, "S@EXAMPLE.com", "hunter2hunter2")
	if len(tok.Reveal()) < len("kls_")+43 || sess.AccountID != a.ID || !sess.ExpiresAt.Equal(epoch.Add(24*time.Hour)) {
		t.Fatalf("session %+v", sess)
	}
	for range 3 { // first from the store, then from the cache
		got, err := e.acc.VerifySession(ctx(), tok)
		if err != nil || got.AccountID != a.ID {
			t.Fatalf("VerifySession = %+v, %v", got, err)
		}
	}
	if err := e.acc.Logout(ctx(), tok); err != nil {
		t.Fatal(err)
	}
	wantVerifyErr(t, e.acc, tok, account.ErrSessionRevoked)
	if err := e.acc.Logout(ctx(), tok); err != nil {
		t.Fatalf("second logout: %v", err)
	}
	// Forged tokens: wrong shape, and right shape but unknown.
	wantVerifyErr(t, e.acc, "", account.ErrSessionInvalid)
	wantVerifyErr(t, e.acc, "kls_short", account.ErrSessionInvalid)
	forged := []byte(tok.Reveal())
	forged[10] ^= 1
	if forged[10] == '-' || forged[10] == '_' {
		forged[10] = 'A'
	}
	wantVerifyErr(t, e.acc, account.Secret(forged), account.ErrSessionInvalid)
	wantVerifyErr(t, e.acc, account.Secret("kls_"+string(make([]byte, 43))), account.ErrSessionInvalid)
	if err := e.acc.Logout(ctx(), "nonsense"); !errors.Is(err, account.ErrSessionInvalid) {
		t.Fatalf("logout garbage: %v", err)
	}
}

func testLoginFailures(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	mustCreate(t, e.acc, account.CreateParams{Name: "F", Email: "f@example.com", Password: "right password"})
	mustCreate(t, e.acc, account.CreateParams{Name: "NoPw", Email: "nopw@example.com"})
	for _, c := range []struct{ email, pw string }{
		{"f@example.com", "wrong password"},
		{"unknown@example.com", "right password"},
		{"not an email", "right password"},
		{"nopw@example.com", ""},
		{"nopw@example.com", "anything at all"},
	} {
		if _, _, err := e.acc.Login(ctx(), c.email, account.Secret(c.pw)); !errors.Is(err, account.ErrInvalidCredentials) {
			t.Errorf("Login(%q): %v, want ErrInvalidCredentials", c.email, err)
		}
	}
}

func testSessionExpiry(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, &account.Options{SessionTTL: time.Hour})
	mustCreate(t, e.acc, account.CreateParams{Name: "E", Email: "e@example.com", Password: "password1"})
	tok, _ := login(t, e.acc, "e@example.com", "password1")
	if _, err := e.acc.VerifySession(ctx(), tok); err != nil {
		t.Fatal(err)
	}
	e.clk.Advance(time.Hour - time.Nanosecond)
	if _, err := e.acc.VerifySession(ctx(), tok); err != nil {
		t.Fatalf("just before expiry: %v", err)
	}
	e.clk.Advance(time.Nanosecond)
	wantVerifyErr(t, e.acc, tok, account.ErrSessionExpired)
	// A fresh service (no cache) sees the same.
	wantVerifyErr(t, e.accounts(t, nil), tok, account.ErrSessionExpired)
	e.clk.Advance(time.Hour)
	n, err := e.acc.PurgeExpiredSessions(ctx(), 0)
	if err != nil || n != 1 {
		t.Fatalf("purge = %d, %v", n, err)
	}
	wantVerifyErr(t, e.accounts(t, nil), tok, account.ErrSessionInvalid)
}

func testSessionStatus(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	a := mustCreate(t, e.acc, account.CreateParams{Name: "St", Email: "st@example.com", Password: "password1"})
	tok, _ := login(t, e.acc, "st@example.com", "password1")
	if _, err := e.acc.VerifySession(ctx(), tok); err != nil { // now cached
		t.Fatal(err)
	}
	if _, err := e.acc.Update(ctx(), a.ID, account.UpdateParams{Status: ptr(account.StatusSuspended)}); err != nil {
		t.Fatal(err)
	}
	wantVerifyErr(t, e.acc, tok, account.ErrSuspended)
	if _, _, err := e.acc.Login(ctx(), "st@example.com", "password1"); !errors.Is(err, account.ErrSuspended) {
		t.Fatalf("login suspended: %v", err)
	}
	if _, err := e.acc.Update(ctx(), a.ID, account.UpdateParams{Status: ptr(account.StatusActive)}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.acc.VerifySession(ctx(), tok); err != nil {
		t.Fatalf("reactivated: %v", err)
	}
	if _, err := e.acc.Update(ctx(), a.ID, account.UpdateParams{Status: ptr(account.StatusClosed)}); err != nil {
		t.Fatal(err)
	}
	wantVerifyErr(t, e.acc, tok, account.ErrSessionRevoked)
	if _, _, err := e.acc.Login(ctx(), "st@example.com", "password1"); !errors.Is(err, account.ErrClosed) {
		t.Fatalf("login closed: %v", err)
	}
}

func testPasswordChange(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	a := mustCreate(t, e.acc, account.CreateParams{Name: "P", Email: "p@example.com", Password: "old password"})
	tok1, _ := login(t, e.acc, "p@example.com", "old password")
	tok2, _ := login(t, e.acc, "p@example.com", "old password")
	if _, err := e.acc.VerifySession(ctx(), tok1); err != nil {
		t.Fatal(err)
	}
	if err := e.acc.SetPassword(ctx(), a.ID, "tiny"); !errors.Is(err, account.ErrInvalidPassword) {
		t.Fatalf("weak password: %v", err)
	}
	if err := e.acc.SetPassword(ctx(), a.ID, "new password"); err != nil {
		t.Fatal(err)
	}
	wantVerifyErr(t, e.acc, tok1, account.ErrSessionRevoked)
	wantVerifyErr(t, e.acc, tok2, account.ErrSessionRevoked)
	if _, _, err := e.acc.Login(ctx(), "p@example.com", "old password"); !errors.Is(err, account.ErrInvalidCredentials) {
		t.Fatalf("old password: %v", err)
	}
	tok3, _ := login(t, e.acc, "p@example.com", "new password")
	if n, err := e.acc.LogoutAll(ctx(), a.ID); err != nil || n != 1 {
		t.Fatalf("LogoutAll = %d, %v", n, err)
	}
	wantVerifyErr(t, e.acc, tok3, account.ErrSessionRevoked)
	if err := e.acc.SetPassword(ctx(), "acct_missing", "long enough"); !errors.Is(err, account.ErrNotFound) {
		t.Fatalf("SetPassword missing: %v", err)
	}
}

func testRehash(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	a := mustCreate(t, e.acc, account.CreateParams{Name: "R", Email: "r@example.com", Password: "password1"})
	before, err := e.st.PasswordHash(ctx(), a.ID)
	if err != nil {
		t.Fatal(err)
	}
	stronger := fastArgon
	stronger.Time = 2
	svc2 := e.accounts(t, &account.Options{Argon2: stronger})
	login(t, svc2, "r@example.com", "password1")
	after, err := e.st.PasswordHash(ctx(), a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if after == before {
		t.Fatal("hash not upgraded after parameter change")
	}
	login(t, svc2, "r@example.com", "password1")
	if again, _ := e.st.PasswordHash(ctx(), a.ID); again != after {
		t.Fatal("hash rewritten although parameters are current")
	}
	login(t, e.acc, "r@example.com", "password1") // old parameters still verify
}

func testCrossProcessLogout(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, &account.Options{SessionCacheTTL: 5 * time.Second})
	mustCreate(t, e.acc, account.CreateParams{Name: "X", Email: "x@example.com", Password: "password1"})
	tok, _ := login(t, e.acc, "x@example.com", "password1")
	uncached := e.accounts(t, &account.Options{SessionCacheTTL: -1})
	if _, err := e.acc.VerifySession(ctx(), tok); err != nil { // cached in e.acc
		t.Fatal(err)
	}
	other := e.accounts(t, nil)
	if err := other.Logout(ctx(), tok); err != nil {
		t.Fatal(err)
	}
	wantVerifyErr(t, uncached, tok, account.ErrSessionRevoked)
	// e.acc may serve its cached copy for at most SessionCacheTTL.
	e.clk.Advance(5 * time.Second)
	wantVerifyErr(t, e.acc, tok, account.ErrSessionRevoked)
}
