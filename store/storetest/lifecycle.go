package storetest

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyledger/keyledger/account"
)

func runLifecycle(t *testing.T, newStore NewStoreFunc) {
	t.Run("VerifyEmailToken", func(t *testing.T) { testVerifyEmailToken(t, newStore) })
	t.Run("PasswordReset", func(t *testing.T) { testPasswordReset(t, newStore) })
	t.Run("TokenSingleUseUnderConcurrency", func(t *testing.T) { testTokenRace(t, newStore) })
	t.Run("ChangePassword", func(t *testing.T) { testChangePassword(t, newStore) })
	t.Run("CloseAccount", func(t *testing.T) { testCloseAccount(t, newStore) })
	t.Run("TokenStoreContract", func(t *testing.T) { testTokenStoreContract(t, newStore) })
}

// mailbox is a Mailer that keeps every message.
type mailbox struct {
	mu   sync.Mutex
	msgs []account.Message
}

func (m *mailbox) SendMail(_ context.Context, msg account.Message) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.msgs = append(m.msgs, msg)
	return nil
}

func (m *mailbox) last(t testing.TB) account.Message {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.msgs) == 0 {
		t.Fatal("no mail sent")
	}
	return m.msgs[len(m.msgs)-1]
}

func (m *mailbox) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.msgs)
}

func mailEnv(t *testing.T, newStore NewStoreFunc) (*env, *mailbox) {
	mb := &mailbox{}
	return newEnv(t, newStore, &account.Options{Mailer: mb}), mb
}

func testVerifyEmailToken(t *testing.T, newStore NewStoreFunc) {
	e, mb := mailEnv(t, newStore)
	a := mustCreate(t, e.acc, account.CreateParams{Name: "V", Email: "v@example.com", Password: "hunter2hunter2"})
	if err := e.acc.SendVerification(ctx(), a.ID); err != nil {
		t.Fatal(err)
	}
	m := mb.last(t)
	if m.Kind != account.MailVerifyEmail || m.To != "v@example.com" || m.AccountID != a.ID || !m.ExpiresAt.Equal(epoch.Add(time.Hour)) {
		t.Fatalf("mail %+v", m)
	}
	// The wrong kind does not consume it.
	if _, err := e.acc.ResetPassword(ctx(), m.Token, "new password 1"); !errors.Is(err, account.ErrTokenInvalid) {
		t.Fatalf("verify token used as reset token: %v", err)
	}
	got, err := e.acc.VerifyEmail(ctx(), m.Token)
	if err != nil || got.ID != a.ID {
		t.Fatalf("VerifyEmail = %+v, %v", got, err)
	}
	if _, err := e.acc.VerifyEmail(ctx(), m.Token); !errors.Is(err, account.ErrTokenInvalid) {
		t.Fatalf("second use: %v, want ErrTokenInvalid", err)
	}
	// Expiry: a token works until TokenTTL has passed.
	if err := e.acc.SendVerification(ctx(), a.ID); err != nil {
		t.Fatal(err)
	}
	e.clk.Advance(time.Hour)
	if _, err := e.acc.VerifyEmail(ctx(), mb.last(t).Token); !errors.Is(err, account.ErrTokenInvalid) {
		t.Fatalf("expired token: %v, want ErrTokenInvalid", err)
	}
	for _, bad := range []account.Secret{"", "klt_short", "kls_" + m.Token[4:]} {
		if _, err := e.acc.VerifyEmail(ctx(), bad); !errors.Is(err, account.ErrTokenInvalid) {
			t.Fatalf("VerifyEmail(forged): %v", err)
		}
	}
	if err := e.acc.SendVerification(ctx(), "acct_missing"); !errors.Is(err, account.ErrNotFound) {
		t.Fatalf("unknown account: %v", err)
	}
}

func testPasswordReset(t *testing.T, newStore NewStoreFunc) {
	e, mb := mailEnv(t, newStore)
	a := mustCreate(t, e.acc, account.CreateParams{Name: "R", Email: "r@example.com", Password: "old password"})
	tok1, _ := login(t, e.acc, "r@example.com", "old password")
	tok2, _ := login(t, e.acc, "r@example.com", "old password")
	// Unknown and malformed addresses get the same answer and no mail.
	for _, email := range []string{"nobody@example.com", "not an email"} {
		if err := e.acc.RequestPasswordReset(ctx(), email); err != nil {
			t.Fatalf("RequestPasswordReset(%q): %v", email, err)
		}
	}
	if mb.count() != 0 {
		t.Fatalf("%d mails for unknown addresses", mb.count())
	}
	if err := e.acc.RequestPasswordReset(ctx(), "R@Example.com"); err != nil {
		t.Fatal(err)
	}
	m := mb.last(t)
	if m.Kind != account.MailPasswordReset || m.To != "r@example.com" || m.Token == "" {
		t.Fatalf("mail %+v", m)
	}
	if _, err := e.acc.ResetPassword(ctx(), m.Token, "tiny"); !errors.Is(err, account.ErrInvalidPassword) {
		t.Fatalf("weak password: %v", err)
	}
	got, err := e.acc.ResetPassword(ctx(), m.Token, "brand new password") // still usable after the refusal
	if err != nil || got.ID != a.ID {
		t.Fatalf("ResetPassword = %+v, %v", got, err)
	}
	for _, tok := range []account.Secret{tok1, tok2} {
		wantVerifyErr(t, e.acc, tok, account.ErrSessionRevoked)
	}
	if _, _, err := e.acc.Login(ctx(), "r@example.com", "old password"); !errors.Is(err, account.ErrInvalidCredentials) {
		t.Fatalf("old password after reset: %v", err)
	}
	login(t, e.acc, "r@example.com", "brand new password")
	if _, err := e.acc.ResetPassword(ctx(), m.Token, "another new password"); !errors.Is(err, account.ErrTokenInvalid) {
		t.Fatalf("reset token reused: %v", err)
	}
	noMail := newEnv(t, newStore, nil)
	if err := noMail.acc.RequestPasswordReset(ctx(), "r@example.com"); !errors.Is(err, account.ErrNoMailer) {
		t.Fatalf("without a mailer: %v", err)
	}
}

func testTokenRace(t *testing.T, newStore NewStoreFunc) {
	e, mb := mailEnv(t, newStore)
	a := mustCreate(t, e.acc, account.CreateParams{Name: "C", Email: "c@example.com"})
	if err := e.acc.SendVerification(ctx(), a.ID); err != nil {
		t.Fatal(err)
	}
	tok := mb.last(t).Token
	var ok atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			_, err := e.acc.VerifyEmail(ctx(), tok)
			switch {
			case err == nil:
				ok.Add(1)
			case !errors.Is(err, account.ErrTokenInvalid):
				t.Errorf("VerifyEmail: %v", err)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 1 {
		t.Fatalf("%d concurrent uses of one token succeeded, want 1", ok.Load())
	}
}

func testChangePassword(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	a := mustCreate(t, e.acc, account.CreateParams{Name: "P", Email: "p@example.com", Password: "current password"})
	old, _ := login(t, e.acc, "p@example.com", "current password")
	if _, _, err := e.acc.ChangePassword(ctx(), a.ID, "wrong password", "next password"); !errors.Is(err, account.ErrInvalidCredentials) {
		t.Fatalf("wrong current password: %v", err)
	}
	wantVerifyErr(t, e.acc, old, nil) // a refused change revokes nothing
	if _, _, err := e.acc.ChangePassword(ctx(), a.ID, "current password", "short"); !errors.Is(err, account.ErrInvalidPassword) {
		t.Fatalf("weak new password: %v", err)
	}
	tok, sess, err := e.acc.ChangePassword(ctx(), a.ID, "current password", "next password")
	if err != nil || sess.AccountID != a.ID {
		t.Fatalf("ChangePassword: %+v %v", sess, err)
	}
	wantVerifyErr(t, e.acc, old, account.ErrSessionRevoked)
	wantVerifyErr(t, e.acc, tok, nil)
	login(t, e.acc, "p@example.com", "next password")
}

func testCloseAccount(t *testing.T, newStore NewStoreFunc) {
	e, mb := mailEnv(t, newStore)
	a := mustCreate(t, e.acc, account.CreateParams{Name: "Zoe Closer", Email: "Zoe@Example.com", Password: "hunter2hunter2",
		Metadata: map[string]string{"company": "Zoe Ltd"}})
	tok, _ := login(t, e.acc, "zoe@example.com", "hunter2hunter2")
	if err := e.acc.RequestPasswordReset(ctx(), "zoe@example.com"); err != nil {
		t.Fatal(err)
	}
	reset := mb.last(t).Token
	if closed, err := e.acc.EmailClosed(ctx(), "zoe@example.com"); err != nil || closed {
		t.Fatalf("EmailClosed before closing: %v %v", closed, err)
	}
	e.clk.Advance(time.Minute)
	c, err := e.acc.Close(ctx(), a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if c.Status != account.StatusClosed || c.Name != account.ClosedName || c.Email == a.Email || c.Metadata != nil ||
		c.ID != a.ID || c.Plan != a.Plan || !c.UpdatedAt.Equal(epoch.Add(time.Minute)) {
		t.Fatalf("closed account %+v", c)
	}
	if got, err := e.acc.Get(ctx(), a.ID); err != nil || got.Email != c.Email || got.Name != account.ClosedName || got.Metadata != nil {
		t.Fatalf("stored closed account %+v %v", got, err)
	}
	if _, err := e.acc.GetByEmail(ctx(), "zoe@example.com"); !errors.Is(err, account.ErrNotFound) {
		t.Fatalf("the old email still finds the account: %v", err)
	}
	wantVerifyErr(t, e.acc, tok, account.ErrSessionRevoked)
	if _, _, err := e.acc.Login(ctx(), "zoe@example.com", "hunter2hunter2"); !errors.Is(err, account.ErrInvalidCredentials) {
		t.Fatalf("login after closing: %v", err)
	}
	if _, err := e.acc.ResetPassword(ctx(), reset, "a new password"); !errors.Is(err, account.ErrTokenInvalid) {
		t.Fatalf("reset token of a closed account: %v", err)
	}
	if closed, err := e.acc.EmailClosed(ctx(), "ZOE@example.com"); err != nil || !closed {
		t.Fatalf("EmailClosed after closing: %v %v", closed, err)
	}
	if h, err := e.st.PasswordHash(ctx(), a.ID); err != nil || h != "" {
		t.Fatalf("password hash kept: %q %v", h, err)
	}
	again, err := e.acc.Close(ctx(), a.ID)
	if err != nil || again.Email != c.Email {
		t.Fatalf("closing twice: %+v %v", again, err)
	}
	// The address is free again, for an account of its own.
	b := mustCreate(t, e.acc, account.CreateParams{Name: "Zoe again", Email: "zoe@example.com"})
	if b.ID == a.ID {
		t.Fatal("same id")
	}
	if _, err := e.acc.Close(ctx(), "acct_missing"); !errors.Is(err, account.ErrNotFound) {
		t.Fatalf("close unknown: %v", err)
	}
}

func testTokenStoreContract(t *testing.T, newStore NewStoreFunc) {
	e := newEnv(t, newStore, nil)
	a := mustCreate(t, e.acc, account.CreateParams{Name: "T", Email: "t@example.com"})
	h := [32]byte{1, 2, 3}
	tk := account.Token{Hash: h, Kind: account.TokenPasswordReset, AccountID: a.ID, CreatedAt: epoch, ExpiresAt: epoch.Add(time.Minute)}
	if err := e.st.CreateToken(ctx(), account.Token{Hash: [32]byte{9}, Kind: account.TokenPasswordReset, AccountID: "acct_missing",
		CreatedAt: epoch, ExpiresAt: epoch.Add(time.Minute)}); !errors.Is(err, account.ErrNotFound) {
		t.Fatalf("token of an unknown account: %v", err)
	}
	if err := e.st.CreateToken(ctx(), tk); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.ConsumeToken(ctx(), account.TokenVerifyEmail, h, epoch); !errors.Is(err, account.ErrTokenInvalid) {
		t.Fatalf("other kind: %v", err)
	}
	got, err := e.st.ConsumeToken(ctx(), account.TokenPasswordReset, h, epoch.Add(time.Minute-1))
	if err != nil || got.AccountID != a.ID || !got.ExpiresAt.Equal(tk.ExpiresAt) || !got.CreatedAt.Equal(epoch) || got.Hash != h {
		t.Fatalf("ConsumeToken = %+v, %v", got, err)
	}
	if _, err := e.st.ConsumeToken(ctx(), account.TokenPasswordReset, h, epoch); !errors.Is(err, account.ErrTokenInvalid) {
		t.Fatalf("consumed twice: %v", err)
	}
	if err := e.st.CreateToken(ctx(), tk); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.ConsumeToken(ctx(), account.TokenPasswordReset, h, epoch.Add(time.Minute)); !errors.Is(err, account.ErrTokenInvalid) {
		t.Fatalf("at expiry: %v", err)
	}
	if closed, err := e.st.EmailClosed(ctx(), [32]byte{7}); err != nil || closed {
		t.Fatalf("EmailClosed(unknown) = %v %v", closed, err)
	}
}
