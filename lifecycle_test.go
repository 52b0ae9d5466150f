package keyledger_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/internal/fakeclock"
	"github.com/keyledger/keyledger/store"
)

// inbox is a Mailer that keeps every message.
type inbox struct {
	mu   sync.Mutex
	msgs []account.Message
}

func (m *inbox) SendMail(_ context.Context, msg account.Message) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.msgs = append(m.msgs, msg)
	return nil
}

func (m *inbox) all() []account.Message {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]account.Message(nil), m.msgs...)
}

// A closed account cannot sign in, keeps no working key, cannot be
// charged, keeps its ledger, and its address earns no second signup grant.
// The closure runs through the facade and, as a host may call it, through
// kl.Accounts.Close directly: the keys are revoked either way (the hook New
// installs), so a direct service call leaves no working key behind.
func TestCloseAccount(t *testing.T) {
	for _, via := range []struct {
		name  string
		close func(context.Context, *keyledger.KeyLedger, string) (account.Account, error)
	}{
		{"facade", func(ctx context.Context, kl *keyledger.KeyLedger, id string) (account.Account, error) {
			return kl.CloseAccount(ctx, id)
		}},
		{"service", func(ctx context.Context, kl *keyledger.KeyLedger, id string) (account.Account, error) {
			return kl.Accounts.Close(ctx, id)
		}},
	} {
		t.Run(via.name, func(t *testing.T) { testCloseAccount(t, via.close) })
	}
}

func testCloseAccount(t *testing.T, closeAccount func(context.Context, *keyledger.KeyLedger, string) (account.Account, error)) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, nil)
		ctx := context.Background()
		a, err := e.kl.Signup(ctx, account.CreateParams{Name: "Leaver", Email: "leaver@example.com", Password: "correct horse"})
		if err != nil {
			t.Fatal(err)
		}
		raw, _, err := e.kl.Keys.Create(ctx, apikey.CreateParams{AccountID: a.ID, Name: "k"})
		if err != nil {
			t.Fatal(err)
		}
		g, err := e.kl.Authorize(ctx, raw, keyledger.Request{Model: "test-model", PromptTokens: 10, MaxCompletionTokens: 10})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := g.Complete(ctx, keyledger.Outcome{StatusCode: 200, PromptTokens: 10, CompletionTokens: 10}); err != nil {
			t.Fatal(err)
		}
		before := e.balance(t, a.ID)
		if _, err := closeAccount(ctx, e.kl, a.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := e.kl.Authorize(ctx, raw, keyledger.Request{Model: "test-model", PromptTokens: 10}); !errors.Is(err, apikey.ErrRevoked) && !errors.Is(err, apikey.ErrAccountInactive) {
			t.Fatalf("Authorize after closing: %v", err)
		}
		ks, err := e.kl.Keys.List(ctx, a.ID, apikey.ListParams{})
		if err != nil || len(ks.Keys) != 1 || ks.Keys[0].Status != apikey.StatusRevoked {
			t.Fatalf("keys after closing: %+v %v", ks.Keys, err)
		}
		if _, _, err := e.kl.Accounts.Login(ctx, "leaver@example.com", "correct horse"); !errors.Is(err, account.ErrInvalidCredentials) {
			t.Fatalf("login after closing: %v", err)
		}
		if after := e.balance(t, a.ID); !after.Equal(before) {
			t.Fatalf("ledger changed by closing: %s -> %s", before, after)
		}
		// Signing up again with the address works, without a second grant.
		again, err := e.kl.Signup(ctx, account.CreateParams{Name: "Back", Email: "LEAVER@example.com"})
		if err != nil {
			t.Fatal(err)
		}
		if bal := e.balance(t, again.ID); !bal.IsZero() {
			t.Fatalf("second signup grant paid: %s", bal)
		}
	})
}

// With verification, sign-up pays no grant until the mailed token is
// used, pays it once, and a taken address answers like a new one while
// its owner gets a mail.
func TestSignupWithVerification(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		st := b.open(t)
		mb := &inbox{}
		clk := fakeclock.New(time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC))
		kl, err := keyledger.New(store.Wrap(st), &keyledger.Options{Now: clk.Now, Prices: prices(t),
			Accounts: &account.Options{Argon2: fastArgon, Mailer: mb}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = kl.Close(context.Background()); st.Close() })
		e := &env{kl: kl, clk: clk, st: st}
		ctx := context.Background()
		a, err := kl.SignupWithVerification(ctx, account.CreateParams{Name: "New", Email: "new@example.com", Password: "correct horse"})
		if err != nil || a.ID == "" {
			t.Fatalf("signup: %+v %v", a, err)
		}
		if bal := e.balance(t, a.ID); !bal.IsZero() {
			t.Fatalf("grant paid before verification: %s", bal)
		}
		msgs := mb.all()
		if len(msgs) != 1 || msgs[0].Kind != account.MailVerifyEmail || msgs[0].To != "new@example.com" {
			t.Fatalf("mails %+v", msgs)
		}
		if _, err := kl.VerifyEmail(ctx, msgs[0].Token); err != nil {
			t.Fatal(err)
		}
		if bal := e.balance(t, a.ID); bal.String() != "50" {
			t.Fatalf("balance after verification: %s", bal)
		}
		if _, err := kl.VerifyEmail(ctx, msgs[0].Token); !errors.Is(err, account.ErrTokenInvalid) {
			t.Fatalf("token reused: %v", err)
		}
		// A second verification (a resent mail) pays nothing more.
		if err := kl.Accounts.SendVerification(ctx, a.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := kl.VerifyEmail(ctx, mb.all()[1].Token); err != nil {
			t.Fatal(err)
		}
		if bal := e.balance(t, a.ID); bal.String() != "50" {
			t.Fatalf("balance after a second verification: %s", bal)
		}
		// The same address again: no error, no account, a mail to the owner.
		dup, err := kl.SignupWithVerification(ctx, account.CreateParams{Name: "Dup", Email: "NEW@example.com", Password: "another password"})
		if err != nil || dup.ID != "" {
			t.Fatalf("duplicate signup: %+v %v", dup, err)
		}
		if last := mb.all()[len(mb.all())-1]; last.Kind != account.MailAlreadyRegistered || last.To != "new@example.com" || last.Token != "" {
			t.Fatalf("duplicate signup mail %+v", last)
		}
	})
}
