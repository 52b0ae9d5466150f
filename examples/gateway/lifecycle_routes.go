package main

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"github.com/keyledger/keyledger/auditlog"
	"net/http"
	"time"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/examples/internal/ghscan"
	"github.com/keyledger/keyledger/httpapi"
	"github.com/keyledger/keyledger/ratelimit"
)

// signupVerified is POST /v1/accounts when email verification is on
// (-smtp): the account is created without its grant and a confirmation
// mail sent; an address that is already registered gets a mail saying so
// instead. Both answer 202 with the same body, so sign-up tells nobody
// which addresses are customers.
func (s *server) signupVerified(w http.ResponseWriter, r *http.Request, name, email, password string) error {
	a, err := s.kl.SignupWithVerification(r.Context(), account.CreateParams{
		Name: name, Email: email, Password: account.Secret(password), TimeZone: accountTimeZone,
	})
	if err != nil && a.ID == "" && classify(err).status < 500 {
		return err // a validation error: the same for every address
	}
	if err != nil {
		// The mail could not go out (or the ledger could not open): the
		// answer must not differ, so it is logged, not returned.
		s.log.WarnContext(r.Context(), "sign-up mail or ledger failed", "error", err)
	}
	writeJSON(w, http.StatusAccepted, map[string]string{
		"status":  "verification_sent",
		"message": "If the address can be used, a confirmation mail is on its way; the signup credits follow the confirmation.",
	})
	return nil
}

// GET /v1/verify-email?token=… (the link in the mail) and
// POST /v1/verify-email {token}
func (s *server) verifyEmail(w http.ResponseWriter, r *http.Request) error {
	tok := r.URL.Query().Get("token")
	if r.Method == http.MethodPost {
		var in struct {
			Token string `json:"token"`
		}
		if err := decodeJSON(r, &in, false); err != nil {
			return err
		}
		tok = in.Token
	}
	a, err := s.kl.VerifyEmail(r.Context(), account.Secret(tok))
	if err != nil && a.ID == "" {
		return err
	}
	v, err := s.accountView(r.Context(), a)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

// POST /v1/password/forgot {email}: always 202, whether or not the address
// is registered; the mail (if any) carries the reset token.
func (s *server) forgotPassword(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Email string `json:"email"`
	}
	if err := decodeJSON(r, &in, false); err != nil {
		return err
	}
	if err := s.throttle.Mail(r.Context(), s.clientAddr(r)); err != nil {
		return err
	}
	if err := s.kl.Accounts.RequestPasswordReset(r.Context(), in.Email); err != nil {
		// Only registered addresses get a mail, so a failed one must not
		// change the answer.
		s.log.WarnContext(r.Context(), "password reset mail failed", "error", err)
	}
	writeJSON(w, http.StatusAccepted, map[string]string{
		"status":  "reset_mail_sent_if_registered",
		"message": "If an account uses this address, a mail with a reset token is on its way.",
	})
	return nil
}

// POST /v1/password/reset {token, password}: sets the new password and
// signs out every session of the account.
func (s *server) resetPassword(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Token    string `json:"token"`
		Password string `json:"password"`
	}
	if err := decodeJSON(r, &in, false); err != nil {
		return err
	}
	if _, err := s.kl.Accounts.ResetPassword(r.Context(), account.Secret(in.Token), account.Secret(in.Password)); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "password_reset"})
	return nil
}

// POST /v1/accounts/{id}/password {current_password, new_password}: every
// session is signed out and a new one returned.
func (s *server) changePassword(w http.ResponseWriter, r *http.Request, acct string) error {
	var in struct {
		Current string `json:"current_password"`
		New     string `json:"new_password"`
	}
	if err := decodeJSON(r, &in, false); err != nil {
		return err
	}
	tok, sess, err := s.kl.Accounts.ChangePassword(r.Context(), acct, account.Secret(in.Current), account.Secret(in.New))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, map[string]string{
		"token": tok.Reveal(), "account_id": sess.AccountID, "expires": rfc3339(sess.ExpiresAt),
	})
	return nil
}

// DELETE /v1/accounts/{id} {password}: closes the account for good — keys
// and sessions revoked, personal fields scrubbed, the ledger kept.
func (s *server) closeAccount(w http.ResponseWriter, r *http.Request, acct string) error {
	var in struct {
		Password string `json:"password"`
	}
	if err := decodeJSON(r, &in, false); err != nil {
		return err
	}
	if err := s.kl.Accounts.CheckPassword(r.Context(), acct, account.Secret(in.Password)); err != nil {
		return err
	}
	a, err := s.kl.CloseAccount(r.Context(), acct)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]string{"id": a.ID, "status": string(a.Status)})
	return nil
}

// admin adapts an operator route: the request must carry the admin token
// ($GATEWAY_ADMIN_TOKEN) as its Bearer credential. To anyone else — a
// customer's session or key included — and to everyone when no token is
// configured, the operator routes are 404, like a path that does not
// exist.
func (s *server) admin(h func(w http.ResponseWriter, r *http.Request) error) http.Handler {
	return s.api(func(w http.ResponseWriter, r *http.Request) error {
		tok, ok := httpapi.Credential(r)
		want := sha256.Sum256([]byte(s.adminToken))
		got := sha256.Sum256([]byte(tok))
		if !ok || s.adminToken == "" || subtle.ConstantTimeCompare(want[:], got[:]) != 1 {
			return errNotFound
		}
		return h(w, r.WithContext(auditlog.WithActor(r.Context(), auditlog.Actor{Kind: auditlog.ActorAdmin, ID: "admin-token"})))
	})
}

// PATCH /v1/admin/accounts/{id} {plan}: an operator changes an account's
// plan; its limits take effect at once. Customers have no route for it.
func (s *server) adminUpdateAccount(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Plan *string `json:"plan"`
	}
	if err := decodeJSON(r, &in, false); err != nil {
		return err
	}
	if in.Plan == nil {
		return badRequest("plan is required.")
	}
	a, err := s.kl.UpdateAccount(r.Context(), r.PathValue("id"), account.UpdateParams{Plan: in.Plan})
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

// sessionTokenPrefix starts the gateway's session tokens (account's
// default); any other credential on a management route is an API key.
const sessionTokenPrefix = "kls_"

// callerKeyCtx keys the verified API key of a management request
// authenticated by key rather than by session.
type callerKeyCtx struct{}

// callerKey returns the API key a management request was authenticated
// with, if it was.
func callerKey(ctx context.Context) (*apikey.Verified, bool) {
	v, ok := ctx.Value(callerKeyCtx{}).(*apikey.Verified)
	return v, ok
}

// managementKey verifies a key presented to the management API: it must be
// a live Forii API key (forii_…, type "api") with the manage scope. SDK
// keys (forii_sk_…) stay inference-only.
func (s *server) managementKey(r *http.Request, tok string) (*apikey.Verified, error) {
	v, err := s.kl.Keys.Verify(r.Context(), apikey.RawKey(tok))
	switch {
	case errors.Is(err, apikey.ErrMalformed):
		return nil, account.ErrSessionInvalid // neither a session nor a key
	case errors.Is(err, apikey.ErrUnknown), errors.Is(err, apikey.ErrRevoked), errors.Is(err, apikey.ErrDisabled),
		errors.Is(err, apikey.ErrExpired), errors.Is(err, apikey.ErrAccountInactive):
		return nil, errBadAPIKey
	case err != nil:
		return nil, err
	case v.Type != "api":
		return nil, errSDKKey
	}
	if err := v.CanManage(""); err != nil {
		return nil, err
	}
	return &v, nil
}

// leakedTokensPerHour bounds the tokens of unsigned leaked-key reports
// from one address: each token is a store lookup.
const leakedTokensPerHour = 1000

// checkLeakedReport admits a leaked-key report: with GitHub's keys
// configured it must carry a valid signature (errBadGitHubSignature);
// otherwise its tokens are taken from the client address's budget
// (leakedTokensPerHour, 429 beyond it).
func (s *server) checkLeakedReport(r *http.Request, body []byte, tokens int) error {
	if s.github != nil {
		err := s.github.Verify(r.Context(), body, r.Header.Get(ghscan.HeaderKeyID), r.Header.Get(ghscan.HeaderSignature))
		switch {
		case errors.Is(err, ghscan.ErrNoSignature), errors.Is(err, ghscan.ErrUnknownKey), errors.Is(err, ghscan.ErrBadSignature):
			return errBadGitHubSignature
		case err != nil:
			return err // GitHub's keys could not be fetched: a 500, logged
		}
		return nil
	}
	d, err := s.kl.Limiter.Allow(r.Context(), ratelimit.Request{
		Key: "leaked:" + s.clientAddr(r), Limit: ratelimit.Limit{Rate: leakedTokensPerHour, Period: time.Hour}, Cost: int64(max(tokens, 1)),
	})
	if err != nil {
		return err
	}
	if !d.Allowed {
		return &keyledger.ThrottleError{Limit: "1000 leaked-key tokens per hour per address", RetryAfter: min(max(d.RetryAfter(), time.Second), time.Hour)}
	}
	return nil
}
