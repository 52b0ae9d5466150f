package keyledger

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/errkind"
	"github.com/keyledger/keyledger/ratelimit"
)

// AuthThrottleOptions configure NewAuthThrottle. nil means defaults; a zero
// Limit takes its default, a negative Rate disables that limit.
type AuthThrottleOptions struct {
	// FailedLoginsPerAddress bounds failed logins per (email, client
	// address): 10 a minute by default.
	FailedLoginsPerAddress ratelimit.Limit
	// FailedLoginsPerEmail bounds failed logins per email from every
	// address together: 100 an hour by default.
	FailedLoginsPerEmail ratelimit.Limit
	// SignupsPerAddress bounds sign-up attempts per client address: 10 an
	// hour by default.
	SignupsPerAddress ratelimit.Limit
	// MailsPerAddress bounds requests that send mail (password reset)
	// per client address: 10 an hour by default.
	MailsPerAddress ratelimit.Limit
	// MaxRetryAfter caps the Retry-After reported for the per-address
	// limits (60 seconds by default), so that an address is never told to
	// stay away longer than that; a client that comes back early may be
	// refused again with a fresh Retry-After.
	MaxRetryAfter time.Duration
	// KeyPrefix starts every bucket name ("auth:" by default), so several
	// hosts can share one Redis.
	KeyPrefix string
}

func (o *AuthThrottleOptions) withDefaults() (AuthThrottleOptions, error) {
	var r AuthThrottleOptions
	if o != nil {
		r = *o
	}
	def := func(l *ratelimit.Limit, d ratelimit.Limit) {
		if *l == (ratelimit.Limit{}) {
			*l = d
		}
	}
	def(&r.FailedLoginsPerAddress, ratelimit.Limit{Rate: 10, Period: time.Minute})
	def(&r.FailedLoginsPerEmail, ratelimit.Limit{Rate: 100, Period: time.Hour})
	def(&r.SignupsPerAddress, ratelimit.Limit{Rate: 10, Period: time.Hour})
	def(&r.MailsPerAddress, ratelimit.Limit{Rate: 10, Period: time.Hour})
	if r.MaxRetryAfter == 0 {
		r.MaxRetryAfter = time.Minute
	}
	if r.KeyPrefix == "" {
		r.KeyPrefix = "auth:"
	}
	for _, l := range []ratelimit.Limit{r.FailedLoginsPerAddress, r.FailedLoginsPerEmail, r.SignupsPerAddress, r.MailsPerAddress} {
		if !l.Unlimited() && (l.Period <= 0 || l.Burst < 0 || int64(l.Period) < l.Rate) {
			return r, fmt.Errorf("%w: auth throttle limit %+v", ErrInvalidOptions, l)
		}
	}
	if r.MaxRetryAfter < 0 {
		return r, fmt.Errorf("%w: negative MaxRetryAfter", ErrInvalidOptions)
	}
	return r, nil
}

// ThrottleError is returned when an AuthThrottle refuses a login or a
// sign-up. errors.Is(err, ErrRateLimited) is true for it.
type ThrottleError struct {
	// Limit names the limit that refused, for the client ("10 failed
	// logins per minute for this email and address").
	Limit string
	// RetryAfter is how long to wait (at most MaxRetryAfter for the
	// per-address limits).
	RetryAfter time.Duration
}

func (e *ThrottleError) Error() string {
	return fmt.Sprintf("keyledger: too many attempts (%s), retry after %s", e.Limit, e.RetryAfter.Round(time.Second))
}

// Is makes errors.Is(err, ErrRateLimited) true.
func (e *ThrottleError) Is(target error) bool { return target == ErrRateLimited }

// Kind is errkind.RateLimited.
func (e *ThrottleError) Kind() errkind.Kind { return errkind.RateLimited }

// AuthThrottle limits password guessing and sign-up floods on top of a
// ratelimit.Limiter (ratelimit.Memory in one process, redislimit across
// instances). Only failed logins count: a login is charged before the
// password is checked and refunded when it turns out not to be a wrong
// password, so a throttled attempt costs no password hash. Buckets are
// named by SHA-256 of the normalized email and the client address, so the
// limiter holds no personal data and a throttled answer is the same whether
// or not the email belongs to an account. It is safe for concurrent use.
type AuthThrottle struct {
	lim ratelimit.Limiter
	opt AuthThrottleOptions
}

// NewAuthThrottle returns a throttle over lim. opts may be nil.
func NewAuthThrottle(lim ratelimit.Limiter, opts *AuthThrottleOptions) (*AuthThrottle, error) {
	if lim == nil {
		return nil, fmt.Errorf("%w: nil limiter", ErrInvalidOptions)
	}
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	return &AuthThrottle{lim: lim, opt: o}, nil
}

// bucket names a bucket by a hash of its parts.
func (t *AuthThrottle) bucket(kind string, parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	var sum [sha256.Size]byte
	return t.opt.KeyPrefix + kind + ":" + hex.EncodeToString(h.Sum(sum[:0])[:16])
}

// emailKey normalizes an email for the buckets; a string that is not an
// address is still throttled, under its trimmed lower-case form.
func emailKey(email string) string {
	if e, err := account.NormalizeEmail(email); err == nil {
		return e
	}
	return strings.ToLower(strings.TrimSpace(email))
}

// Login checks the throttle, then logs in through accounts. clientAddr is
// the caller's address as the host determined it (see
// httpapi.TrustedProxies). It returns a *ThrottleError when the (email,
// address) or email budget of failed logins is spent, and otherwise what
// accounts.Login returns. Attempts that fail for any reason but a wrong
// password (success, a suspended account, ErrBusy, a store failure) are not
// counted.
func (t *AuthThrottle) Login(ctx context.Context, accounts *account.Service, email string, password account.Secret, clientAddr string) (account.Secret, account.Session, error) {
	e := emailKey(email)
	reqs := []ratelimit.Request{
		{Key: t.bucket("login-ea", e, clientAddr), Limit: t.opt.FailedLoginsPerAddress, Cost: 1},
		{Key: t.bucket("login-e", e), Limit: t.opt.FailedLoginsPerEmail, Cost: 1},
	}
	d, err := t.lim.Allow(ctx, reqs...)
	if err != nil {
		return "", account.Session{}, fmt.Errorf("keyledger: login throttle: %w", err)
	}
	if !d.Allowed {
		return "", account.Session{}, t.refusal(&d, []string{
			fmt.Sprintf("%s for this email and address", describe(t.opt.FailedLoginsPerAddress, "failed logins")),
			fmt.Sprintf("%s for this email", describe(t.opt.FailedLoginsPerEmail, "failed logins")),
		}, []bool{true, false})
	}
	tok, sess, err := accounts.Login(ctx, email, password)
	if !errors.Is(err, account.ErrInvalidCredentials) {
		for i := range reqs {
			reqs[i].Cost = -1
		}
		// A refund that fails only leaves the throttle stricter than it
		// should be; it is not the caller's failure.
		_ = t.lim.Adjust(context.WithoutCancel(ctx), reqs...)
	}
	return tok, sess, err
}

// Signup takes one sign-up attempt of clientAddr from its budget; call it
// before creating the account. It returns a *ThrottleError when the
// budget is spent.
func (t *AuthThrottle) Signup(ctx context.Context, clientAddr string) error {
	d, err := t.lim.Allow(ctx, ratelimit.Request{Key: t.bucket("signup-a", clientAddr), Limit: t.opt.SignupsPerAddress, Cost: 1})
	if err != nil {
		return fmt.Errorf("keyledger: sign-up throttle: %w", err)
	}
	if !d.Allowed {
		return t.refusal(&d, []string{describe(t.opt.SignupsPerAddress, "sign-ups") + " per address"}, []bool{true})
	}
	return nil
}

// Mail takes one mail-sending request (a password reset) of clientAddr
// from its budget, so that nobody can make the host mail a stranger
// without bound. It returns a *ThrottleError when the budget is spent.
func (t *AuthThrottle) Mail(ctx context.Context, clientAddr string) error {
	d, err := t.lim.Allow(ctx, ratelimit.Request{Key: t.bucket("mail-a", clientAddr), Limit: t.opt.MailsPerAddress, Cost: 1})
	if err != nil {
		return fmt.Errorf("keyledger: mail throttle: %w", err)
	}
	if !d.Allowed {
		return t.refusal(&d, []string{describe(t.opt.MailsPerAddress, "mail requests") + " per address"}, []bool{true})
	}
	return nil
}

// refusal builds the error for a refused decision: it names the first
// refusing bucket and caps Retry-After for per-address buckets.
func (t *AuthThrottle) refusal(d *ratelimit.Decision, names []string, perAddress []bool) *ThrottleError {
	e := &ThrottleError{}
	for i, r := range d.Buckets() {
		if r.Allowed || r.RetryAfter <= 0 && !r.TooLarge {
			continue
		}
		ra := r.RetryAfter
		if perAddress[i] && t.opt.MaxRetryAfter > 0 {
			ra = min(ra, t.opt.MaxRetryAfter)
		}
		if e.Limit == "" {
			e.Limit = names[i]
		}
		e.RetryAfter = max(e.RetryAfter, ra)
	}
	if e.Limit == "" {
		e.Limit = names[0]
	}
	e.RetryAfter = max(e.RetryAfter, time.Second)
	return e
}

// describe renders a limit as "10 failed logins per minute".
func describe(l ratelimit.Limit, what string) string {
	per := l.Period.String()
	switch l.Period {
	case time.Minute:
		per = "minute"
	case time.Hour:
		per = "hour"
	case 24 * time.Hour:
		per = "day"
	}
	return fmt.Sprintf("%d %s per %s", l.Rate, what, per)
}
