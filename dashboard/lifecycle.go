package dashboard

import (
	"errors"
	"net/http"

	"github.com/keyledger/keyledger/account"
)

// message is the data of the message page.
type message struct {
	Text, Link, LinkText string
}

// signUpVerified finishes a sign-up with email verification: the same
// page whether the address was new or taken, unless the form itself is
// invalid (which says nothing about the address).
func (h *Handler) signUpVerified(w http.ResponseWriter, r *http.Request, f authForm, pw account.Secret) {
	a, err := h.kl.SignupWithVerification(r.Context(), account.CreateParams{Name: f.Name, Email: f.Email, Password: pw, TimeZone: h.o.TimeZone})
	if err != nil && a.ID == "" {
		var msg string
		switch {
		case errors.Is(err, account.ErrInvalidEmail):
			msg = "Enter a valid email address."
		case errors.Is(err, account.ErrInvalidName):
			msg = "The name must be 1 to 120 characters."
		case errors.Is(err, account.ErrInvalidPassword):
			msg = "The password must be at least 8 characters."
		}
		if msg != "" {
			h.renderAnon(w, r, http.StatusBadRequest, "signup", "Sign up", f, msg)
			return
		}
	}
	if err != nil { // the mail or the ledger failed: the answer must not differ
		h.o.Logger.WarnContext(r.Context(), "dashboard: sign-up mail or ledger failed", "error", err)
	}
	h.renderAnon(w, r, http.StatusOK, "message", "Check your mail", message{
		Text: "If the address can be used, we sent a link to confirm it. Your signup credits follow the confirmation.",
		Link: h.base + "/signin", LinkText: "Sign in",
	}, "")
}

// GET /verify?token=: the link of the confirmation mail.
func (h *Handler) verifyEmail(w http.ResponseWriter, r *http.Request) {
	_, err := h.kl.VerifyEmail(r.Context(), account.Secret(r.URL.Query().Get("token")))
	switch {
	case errors.Is(err, account.ErrTokenInvalid), errors.Is(err, account.ErrClosed):
		h.renderAnon(w, r, http.StatusBadRequest, "message", "Confirmation failed", message{
			Text: "This link is invalid, already used or expired.", Link: h.base + "/signin", LinkText: "Sign in",
		}, "")
	case err != nil:
		h.fail(w, r, nil, err)
	default:
		h.renderAnon(w, r, http.StatusOK, "message", "Address confirmed", message{
			Text: "Thank you: your address is confirmed and your signup credits are in your balance.",
			Link: h.base + "/signin", LinkText: "Sign in",
		}, "")
	}
}

func (h *Handler) forgotPage(w http.ResponseWriter, r *http.Request) {
	h.renderAnon(w, r, http.StatusOK, "forgot", "Reset your password", authForm{}, "")
}

// POST /forgot {email}: the same answer for every address.
func (h *Handler) forgot(w http.ResponseWriter, r *http.Request) {
	if err := h.checkCSRF(r, ""); err != nil {
		h.fail(w, r, nil, err)
		return
	}
	f := authForm{Email: r.PostForm.Get("email")}
	if h.o.Throttle != nil {
		if err := h.o.Throttle.Mail(r.Context(), h.clientAddr(r)); err != nil {
			if m, st, ok := h.refusal(w, err); ok {
				h.renderAnon(w, r, st, "forgot", "Reset your password", f, m)
				return
			}
			h.fail(w, r, nil, err)
			return
		}
	}
	if err := h.kl.Accounts.RequestPasswordReset(r.Context(), f.Email); err != nil {
		if errors.Is(err, account.ErrNoMailer) {
			h.renderAnon(w, r, http.StatusServiceUnavailable, "forgot", "Reset your password", f,
				"Password reset by mail is not available on this server.")
			return
		}
		// Only registered addresses get a mail: a failure must not show.
		h.o.Logger.WarnContext(r.Context(), "dashboard: password reset mail failed", "error", err)
	}
	h.renderAnon(w, r, http.StatusOK, "message", "Check your mail", message{
		Text: "If an account uses this address, we sent it a link to choose a new password. The link works once, for an hour.",
		Link: h.base + "/signin", LinkText: "Back to sign in",
	}, "")
}

// resetForm is the data of the reset page.
type resetForm struct{ Token string }

func (h *Handler) resetPage(w http.ResponseWriter, r *http.Request) {
	h.renderAnon(w, r, http.StatusOK, "reset", "Choose a new password", resetForm{Token: r.URL.Query().Get("token")}, "")
}

// POST /reset {token, password}
func (h *Handler) reset(w http.ResponseWriter, r *http.Request) {
	if err := h.checkCSRF(r, ""); err != nil {
		h.fail(w, r, nil, err)
		return
	}
	f := resetForm{Token: r.PostForm.Get("token")}
	_, err := h.kl.Accounts.ResetPassword(r.Context(), account.Secret(f.Token), account.Secret(r.PostForm.Get("password")))
	switch {
	case errors.Is(err, account.ErrInvalidPassword):
		h.renderAnon(w, r, http.StatusBadRequest, "reset", "Choose a new password", f, "The password must be at least 8 characters.")
	case errors.Is(err, account.ErrTokenInvalid), errors.Is(err, account.ErrClosed):
		h.renderAnon(w, r, http.StatusBadRequest, "message", "Reset failed", message{
			Text: "This link is invalid, already used or expired.", Link: h.base + "/forgot", LinkText: "Ask for a new link",
		}, "")
	case err != nil:
		if m, st, ok := h.refusal(w, err); ok {
			h.renderAnon(w, r, st, "reset", "Choose a new password", f, m)
			return
		}
		h.fail(w, r, nil, err)
	default:
		h.renderAnon(w, r, http.StatusOK, "message", "Password changed", message{
			Text: "Your new password is set, and every session was signed out.", Link: h.base + "/signin", LinkText: "Sign in",
		}, "")
	}
}

func (h *Handler) passwordPage(w http.ResponseWriter, r *http.Request, v *viewer) error {
	return h.render(w, r, v, http.StatusOK, "password", "Change your password", nil)
}

// POST /password {current_password, new_password}: every other session
// ends; this browser gets the new session.
func (h *Handler) changePassword(w http.ResponseWriter, r *http.Request, v *viewer) error {
	tok, sess, err := h.kl.Accounts.ChangePassword(r.Context(), v.Account.ID,
		account.Secret(r.PostForm.Get("current_password")), account.Secret(r.PostForm.Get("new_password")))
	var msg string
	switch {
	case errors.Is(err, account.ErrInvalidCredentials):
		msg = "The current password is wrong."
	case errors.Is(err, account.ErrInvalidPassword):
		msg = "The new password must be at least 8 characters."
	case err != nil:
		if m, st, ok := h.refusal(w, err); ok {
			return h.renderWithError(w, r, v, st, "password", "Change your password", nil, m)
		}
		return err
	}
	if msg != "" {
		return h.renderWithError(w, r, v, http.StatusBadRequest, "password", "Change your password", nil, msg)
	}
	h.startSession(w, r, tok, sess)
	h.redirect(w, r, "/?done=password")
	return nil
}
