package main

import (
	"context"
	"errors"
	"github.com/keyledger/keyledger/auditlog"
	"net/http"
	"strings"

	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/httpapi"
)

// accountTimeZone is the time zone of accounts the gateway creates: usage
// days and the monthly cap follow India Standard Time.
const accountTimeZone = "Asia/Kolkata"

// api adapts a handler that returns an error.
func (s *server) api(h func(w http.ResponseWriter, r *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r = r.WithContext(s.auditContext(r)) // the client of every audited change
		if err := h(w, r); err != nil {
			s.writeError(w, r, err)
		}
	})
}

// owner adapts a handler of /v1/accounts/{id}/…: the request must carry a
// live session token of account {id}, or a Forii API key (forii_…, with
// the manage scope) of that account (managementKey). Another account's id
// is 404, so a caller cannot even learn which ids exist.
func (s *server) owner(h func(w http.ResponseWriter, r *http.Request, acct string) error) http.Handler {
	return s.api(func(w http.ResponseWriter, r *http.Request) error {
		tok, ok := httpapi.Credential(r)
		if !ok {
			return errNoSession
		}
		if !strings.HasPrefix(tok, sessionTokenPrefix) {
			v, err := s.managementKey(r, tok)
			if err != nil {
				return err
			}
			if v.AccountID != r.PathValue("id") {
				return errNotFound
			}
			ctx := auditlog.WithActor(r.Context(), auditlog.Actor{Kind: auditlog.ActorKey, ID: v.KeyID})
			return h(w, r.WithContext(context.WithValue(ctx, callerKeyCtx{}, v)), v.AccountID)
		}
		sess, err := s.kl.Accounts.VerifySession(r.Context(), account.Secret(tok))
		if err != nil {
			return err
		}
		if sess.AccountID != r.PathValue("id") {
			return errNotFound
		}
		ctx := auditlog.WithActor(r.Context(), auditlog.Actor{Kind: auditlog.ActorSession, ID: sess.AccountID})
		return h(w, r.WithContext(ctx), sess.AccountID)
	})
}

type accountJSON struct {
	ID         string          `json:"id"`
	Name       string          `json:"name"`
	Email      string          `json:"email"`
	Plan       string          `json:"plan"`
	CreditsINR credits.Display `json:"credits_inr"`
	Created    string          `json:"created"`
}

func (s *server) accountView(ctx context.Context, a account.Account) (accountJSON, error) {
	bal, err := s.kl.Credits.Balance(ctx, a.ID)
	if errors.Is(err, credits.ErrUnknownAccount) {
		// Signup stopped between the account and its ledger: finish it.
		if err = s.kl.EnsureLedger(ctx, a); err == nil {
			bal, err = s.kl.Credits.Balance(ctx, a.ID)
		}
	}
	if err != nil {
		return accountJSON{}, err
	}
	return accountJSON{ID: a.ID, Name: a.Name, Email: a.Email, Plan: a.Plan,
		CreditsINR: s.kl.Credits.Unit().Display(bal), Created: rfc3339(a.CreatedAt)}, nil
}

// POST /v1/accounts {name, email, password}
func (s *server) signup(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Name     string `json:"name"`
		Email    string `json:"email"`
		Password string `json:"password"`
	}
	if err := decodeJSON(r, &in, false); err != nil {
		return err
	}
	if in.Password == "" {
		return badRequest("password is required.")
	}
	if err := s.throttle.Signup(r.Context(), s.clientAddr(r)); err != nil {
		return err
	}
	if s.verify {
		return s.signupVerified(w, r, in.Name, in.Email, in.Password)
	}
	a, err := s.kl.Signup(r.Context(), account.CreateParams{
		Name: in.Name, Email: in.Email, Password: account.Secret(in.Password), TimeZone: accountTimeZone,
	})
	if err != nil && a.ID == "" {
		return err
	}
	v, err := s.accountView(r.Context(), a)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, v)
	return nil
}

// POST /v1/sessions {email, password}
func (s *server) login(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Email    string `json:"email"`
		Password string `json:"password"`
	}
	if err := decodeJSON(r, &in, false); err != nil {
		return err
	}
	tok, sess, err := s.throttle.Login(r.Context(), s.kl.Accounts, in.Email, account.Secret(in.Password), s.clientAddr(r))
	if errors.Is(err, account.ErrInvalidEmail) {
		err = account.ErrInvalidCredentials
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, map[string]string{
		"token": tok.Reveal(), "account_id": sess.AccountID, "expires": rfc3339(sess.ExpiresAt),
	})
	return nil
}

// DELETE /v1/sessions (Bearer session token)
func (s *server) logout(w http.ResponseWriter, r *http.Request) error {
	tok, ok := httpapi.Credential(r)
	if !ok {
		return errNoSession
	}
	if err := s.kl.Accounts.Logout(r.Context(), account.Secret(tok)); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// GET /v1/accounts/{id}
func (s *server) getAccount(w http.ResponseWriter, r *http.Request, acct string) error {
	a, err := s.kl.Accounts.Get(r.Context(), acct)
	if err != nil {
		return err
	}
	v, err := s.accountView(r.Context(), a)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

// GET /v1/accounts/{id}/balance
func (s *server) getBalance(w http.ResponseWriter, r *http.Request, acct string) error {
	a, err := s.kl.Accounts.Get(r.Context(), acct)
	if err != nil {
		return err
	}
	bal, err := s.kl.Credits.Balance(r.Context(), acct)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, struct {
		CreditsINR credits.Display `json:"credits_inr"`
		Plan       string          `json:"plan"`
	}{s.kl.Credits.Unit().Display(bal), a.Plan})
	return nil
}
