package keyledger

import (
	"context"
	"encoding/json"
	"errors"
	"hash/fnv"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/shopspring/decimal"

	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/auditlog"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/internal/storewrap"
	"github.com/keyledger/keyledger/store"
)

// auditStore is the store the account, key and credits services of the
// facade write through: after each management write commits it appends the
// audit entry (Options.Audit). Reads, the hot path's writes (spends, key
// touches) and everything else pass through. Because the services, not the
// host, call it, every way of changing an account — the facade, kl.Keys,
// kl.Credits, kl.Accounts, the dashboard, an example's handler — is
// recorded.
//
// The entry is appended directly after the change commits, not in its
// transaction: an action that failed is never recorded, and an action
// that committed is recorded unless the process dies, or the audit append
// fails (logged), between the two. A replayed credit (same idempotency key)
// is recorded once: its entry ID derives from the ledger entry's.
type auditStore struct {
	store.Store
	audit *auditlog.Service
	log   *slog.Logger
	// stripes serialise this process's read-modify-write changes of one
	// row (a key, an account, a ledger policy), so that the "before" an
	// entry shows is the row just before its own change and two concurrent
	// revokes of one key record one key.revoke. Management writes only.
	stripes [64]sync.Mutex
}

// lock locks the stripe of a row's ID and returns its unlock.
func (s *auditStore) lock(id string) func() {
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	m := &s.stripes[h.Sum32()%uint32(len(s.stripes))]
	m.Lock()
	return m.Unlock
}

// newAuditStore wraps st. keys is the store of the key service: the
// wrapper, with st's key-change notifications when st has them.
func newAuditStore(st store.Store, audit *auditlog.Service, log *slog.Logger) (ast *auditStore, keys store.Store) {
	ast = &auditStore{Store: st, audit: audit, log: log}
	if cn, ok := st.(apikey.ChangeNotifier); ok {
		return ast, auditStoreNotify{ast, cn}
	}
	return ast, ast
}

// auditStoreNotify is an auditStore over a store with key-change
// notifications (pgstore).
type auditStoreNotify struct {
	*auditStore
	cn apikey.ChangeNotifier
}

func (s auditStoreNotify) WatchKeyChanges(fn func(apikey.Change)) (stop func()) {
	return s.cn.WatchKeyChanges(fn)
}

// The credits service's optional capabilities, forwarded as st has them.

func (s *auditStore) GroupCommit() bool { return storewrap.Base{Store: s.Store}.GroupCommit() }

func (s *auditStore) ProcessHolds() bool { return storewrap.Base{Store: s.Store}.ProcessHolds() }

func (s *auditStore) LeasedHolds() bool { return storewrap.Base{Store: s.Store}.LeasedHolds() }

func (s *auditStore) Shared(key any, mk func() any) any {
	return storewrap.Base{Store: s.Store}.Shared(key, mk)
}

func (s *auditStore) LedgerReserveKey(ctx context.Context, accountID, key string) ([32]byte, string, bool, error) {
	return storewrap.Base{Store: s.Store}.LedgerReserveKey(ctx, accountID, key)
}

// appendTimeout bounds an audit append, which runs on a context that the
// caller's cancellation does not reach (the change has committed).
const appendTimeout = 5 * time.Second

func (s *auditStore) record(ctx context.Context, e auditlog.Entry) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), appendTimeout)
	defer cancel()
	if _, err := s.audit.Append(ctx, e); err != nil && !errors.Is(err, auditlog.ErrDuplicateEntry) {
		s.log.ErrorContext(ctx, "keyledger: audit entry not recorded", "action", e.Action,
			"account", e.AccountID, "target", e.Target.ID, "err", err)
	}
}

func timeText(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func listText(l []string) string { return strings.Join(l, ",") }

func jsonOf(v any) string {
	if v == nil {
		return ""
	}
	b, err := json.Marshal(v)
	if err != nil || string(b) == "null" {
		return ""
	}
	return string(b)
}

func keyTarget(id string) auditlog.Target { return auditlog.Target{Type: "key", ID: id} }

// keyDiff lists the fields of a key that changed; secrets are no fields.
func keyDiff(b, a apikey.APIKey) []auditlog.Change {
	return auditlog.Diff(
		[3]string{"name", b.Name, a.Name},
		[3]string{"type", b.Type, a.Type},
		[3]string{"environment", string(b.Environment), string(a.Environment)},
		[3]string{"models", listText(b.Models), listText(a.Models)},
		[3]string{"scopes", listText(b.Scopes), listText(a.Scopes)},
		[3]string{"status", string(b.Status), string(a.Status)},
		[3]string{"expires_at", timeText(b.ExpiresAt), timeText(a.ExpiresAt)},
		[3]string{"grace_until", timeText(b.GraceUntil), timeText(a.GraceUntil)},
		[3]string{"metadata", jsonOf(b.Metadata), jsonOf(a.Metadata)},
		[3]string{"rate_limits", jsonOf(b.RateLimits), jsonOf(a.RateLimits)},
	)
}

func (s *auditStore) CreateAPIKey(ctx context.Context, k apikey.APIKey, hash [32]byte) error {
	if err := s.Store.CreateAPIKey(ctx, k, hash); err != nil {
		return err
	}
	s.record(ctx, auditlog.Entry{AccountID: k.AccountID, Action: auditlog.ActionKeyCreate, Target: keyTarget(k.ID),
		Changes: keyDiff(apikey.APIKey{}, k)})
	return nil
}

func (s *auditStore) UpdateAPIKey(ctx context.Context, accountID, keyID string, u apikey.Update, now time.Time) (apikey.APIKey, error) {
	defer s.lock(keyID)()
	before, _ := s.Store.APIKey(ctx, accountID, keyID)
	after, err := s.Store.UpdateAPIKey(ctx, accountID, keyID, u, now)
	if err != nil {
		return after, err
	}
	changes := keyDiff(before, after)
	if len(changes) == 0 {
		return after, nil // nothing changed (a repeated revoke)
	}
	action := auditlog.ActionKeyUpdate
	if before.Status != after.Status {
		switch after.Status {
		case apikey.StatusRevoked:
			action = auditlog.ActionKeyRevoke
		case apikey.StatusDisabled:
			action = auditlog.ActionKeyDisable
		case apikey.StatusExpired:
			action = auditlog.ActionKeyExpire
		}
	}
	s.record(ctx, auditlog.Entry{AccountID: after.AccountID, Action: action, Target: keyTarget(keyID), Changes: changes})
	return after, nil
}

func (s *auditStore) RotateAPIKey(ctx context.Context, accountID, keyID string, r apikey.Rotation, now time.Time) (apikey.APIKey, error) {
	defer s.lock(keyID)()
	before, _ := s.Store.APIKey(ctx, accountID, keyID)
	after, err := s.Store.RotateAPIKey(ctx, accountID, keyID, r, now)
	if err != nil {
		return after, err
	}
	changes := append(keyDiff(before, after), auditlog.Change{Field: "secret"}) // the secret changed; never its value
	s.record(ctx, auditlog.Entry{AccountID: after.AccountID, Action: auditlog.ActionKeyRotate, Target: keyTarget(keyID), Changes: changes})
	return after, nil
}

func accountTarget(id string) auditlog.Target { return auditlog.Target{Type: "account", ID: id} }

// accountDiff lists the fields of an account that changed. Personal data
// (name, email) appears as changed without its values, so that the audit
// log does not keep what closing the account scrubs.
func accountDiff(b, a account.Account) []auditlog.Change {
	cs := auditlog.Diff(
		[3]string{"name", b.Name, a.Name},
		[3]string{"email", b.Email, a.Email},
		[3]string{"plan", b.Plan, a.Plan},
		[3]string{"status", string(b.Status), string(a.Status)},
		[3]string{"time_zone", b.TimeZone, a.TimeZone},
		[3]string{"limits", jsonOf(b.Limits), jsonOf(a.Limits)},
		[3]string{"metadata", jsonOf(b.Metadata), jsonOf(a.Metadata)},
	)
	for i := range cs {
		if cs[i].Field == "name" || cs[i].Field == "email" {
			cs[i].Before, cs[i].After = "", ""
		}
	}
	return cs
}

func (s *auditStore) CreateAccount(ctx context.Context, a account.Account, passwordHash string) error {
	if err := s.Store.CreateAccount(ctx, a, passwordHash); err != nil {
		return err
	}
	s.record(ctx, auditlog.Entry{AccountID: a.ID, Action: auditlog.ActionAccountCreate, Target: accountTarget(a.ID),
		Changes: accountDiff(account.Account{}, a)})
	return nil
}

func (s *auditStore) UpdateAccount(ctx context.Context, id string, u account.Update, now time.Time) (account.Account, error) {
	defer s.lock(id)()
	before, _ := s.Store.Account(ctx, id)
	after, err := s.Store.UpdateAccount(ctx, id, u, now)
	if err != nil {
		return after, err
	}
	changes := accountDiff(before, after)
	if len(changes) == 0 {
		return after, nil
	}
	action := auditlog.ActionAccountUpdate
	if before.Plan != after.Plan {
		action = auditlog.ActionPlanChange
	}
	s.record(ctx, auditlog.Entry{AccountID: id, Action: action, Target: accountTarget(id), Changes: changes})
	return after, nil
}

func (s *auditStore) SetPasswordHash(ctx context.Context, id, hash string, now time.Time) error {
	if err := s.Store.SetPasswordHash(ctx, id, hash, now); err != nil {
		return err
	}
	s.record(ctx, auditlog.Entry{AccountID: id, Action: auditlog.ActionPasswordChange, Target: accountTarget(id),
		Changes: []auditlog.Change{{Field: "password"}}})
	return nil
}

func (s *auditStore) CloseAccount(ctx context.Context, id string, now time.Time) (account.Account, error) {
	defer s.lock(id)()
	before, _ := s.Store.Account(ctx, id)
	a, err := s.Store.CloseAccount(ctx, id, now)
	if err != nil {
		return a, err
	}
	if before.Status != account.StatusClosed {
		s.record(ctx, auditlog.Entry{AccountID: id, Action: auditlog.ActionAccountClose, Target: accountTarget(id),
			Changes: auditlog.Diff([3]string{"status", string(before.Status), string(a.Status)})})
	}
	return a, nil
}

// sessionActor is the actor of a session change: the context's, else the
// session's own account (a sign-in has no actor before it).
func sessionActor(ctx context.Context, accountID string) auditlog.Actor {
	if a, ok := auditlog.ActorFrom(ctx); ok {
		return a
	}
	return auditlog.Actor{Kind: auditlog.ActorSession, ID: accountID}
}

func (s *auditStore) CreateSession(ctx context.Context, sess account.Session) error {
	if err := s.Store.CreateSession(ctx, sess); err != nil {
		return err
	}
	s.record(ctx, auditlog.Entry{AccountID: sess.AccountID, Action: auditlog.ActionSessionCreate, Actor: sessionActor(ctx, sess.AccountID),
		Target: auditlog.Target{Type: "session"}, Changes: []auditlog.Change{{Field: "expires_at", After: timeText(sess.ExpiresAt)}}})
	return nil
}

func (s *auditStore) RevokeSession(ctx context.Context, tokenHash [32]byte, at time.Time) error {
	sess, _ := s.Store.Session(ctx, tokenHash)
	if err := s.Store.RevokeSession(ctx, tokenHash, at); err != nil {
		return err
	}
	if sess.AccountID != "" && sess.RevokedAt.IsZero() {
		s.record(ctx, auditlog.Entry{AccountID: sess.AccountID, Action: auditlog.ActionSessionRevoke,
			Actor: sessionActor(ctx, sess.AccountID), Target: auditlog.Target{Type: "session"}})
	}
	return nil
}

func (s *auditStore) RevokeSessions(ctx context.Context, accountID string, at time.Time) (int, error) {
	n, err := s.Store.RevokeSessions(ctx, accountID, at)
	if err == nil && n > 0 {
		s.record(ctx, auditlog.Entry{AccountID: accountID, Action: auditlog.ActionSessionsRevoke, Actor: sessionActor(ctx, accountID),
			Target: auditlog.Target{Type: "session"}, Changes: []auditlog.Change{{Field: "sessions", After: itoa(n)}}})
	}
	return n, err
}

func (s *auditStore) CreateToken(ctx context.Context, t account.Token) error {
	if err := s.Store.CreateToken(ctx, t); err != nil {
		return err
	}
	action := "token.create"
	switch t.Kind {
	case account.TokenVerifyEmail:
		action = auditlog.ActionEmailVerifySent
	case account.TokenPasswordReset:
		action = auditlog.ActionPasswordReset
	}
	s.record(ctx, auditlog.Entry{AccountID: t.AccountID, Action: action, Target: accountTarget(t.AccountID),
		Changes: []auditlog.Change{{Field: "expires_at", After: timeText(t.ExpiresAt)}}})
	return nil
}

func policyDiff(b, a credits.Policy) []auditlog.Change {
	return auditlog.Diff(
		[3]string{"overdraft", b.Overdraft.String(), a.Overdraft.String()},
		[3]string{"monthly_cap", b.MonthlyCap.String(), a.MonthlyCap.String()},
		[3]string{"time_zone", b.TimeZone, a.TimeZone},
		[3]string{"auto_recharge", jsonOf(b.AutoRecharge), jsonOf(a.AutoRecharge)},
	)
}

func (s *auditStore) SetLedgerPolicy(ctx context.Context, accountID string, p credits.Policy, now time.Time) (credits.Account, error) {
	defer s.lock("ledger:" + accountID)()
	before, _ := s.Store.LedgerAccount(ctx, accountID, now)
	after, err := s.Store.SetLedgerPolicy(ctx, accountID, p, now)
	if err != nil {
		return after, err
	}
	if changes := policyDiff(before.Policy, after.Policy); len(changes) > 0 {
		s.record(ctx, auditlog.Entry{AccountID: accountID, Action: auditlog.ActionCreditsPolicy,
			Target: auditlog.Target{Type: "ledger", ID: accountID}, Changes: changes})
	}
	return after, nil
}

func (s *auditStore) LedgerCredit(ctx context.Context, now time.Time, r credits.CreditRequest) (credits.Entry, error) {
	e, err := s.Store.LedgerCredit(ctx, now, r)
	if err != nil {
		return e, err
	}
	changes := []auditlog.Change{
		{Field: "balance", Before: e.BalanceAfter.Sub(e.Amount).String(), After: e.BalanceAfter.String()},
		{Field: "amount", After: e.Amount.String()},
	}
	if e.Reference != "" {
		changes = append(changes, auditlog.Change{Field: "reference", After: e.Reference})
	}
	if !e.ExpiresAt.IsZero() {
		changes = append(changes, auditlog.Change{Field: "expires_at", After: timeText(e.ExpiresAt)})
	}
	// The entry's ID makes a replay (the same idempotency key returns the
	// first entry) a duplicate the audit store refuses.
	s.record(ctx, auditlog.Entry{ID: "aud_" + e.ID, AccountID: e.AccountID, Action: auditlog.ActionCreditsPrefix + string(e.Type),
		Target: auditlog.Target{Type: "ledger_entry", ID: e.ID}, Changes: changes})
	return e, nil
}

// keySpendText is a key's spend limit as the audit log shows it: "5 per
// day", or "" for none.
func keySpendText(k credits.KeySpend, ok bool) string {
	if !ok || k.Period == "" {
		return ""
	}
	return k.Limit.String() + " per " + string(k.Period)
}

// findKeySpend returns the key's limit in a, and false if it has none.
func findKeySpend(a credits.Account, keyID string) (credits.KeySpend, bool) {
	for _, k := range a.Keys {
		if k.KeyID == keyID {
			return k, true
		}
	}
	return credits.KeySpend{}, false
}

func (s *auditStore) SetKeyLimit(ctx context.Context, accountID, keyID string, limit credits.Amount, p credits.Period, now time.Time) (credits.KeySpend, error) {
	defer s.lock("ledger:" + accountID)()
	before, _ := s.Store.LedgerAccount(ctx, accountID, now)
	after, err := s.Store.SetKeyLimit(ctx, accountID, keyID, limit, p, now)
	if err != nil {
		return after, err
	}
	b, bok := findKeySpend(before, keyID)
	if changes := auditlog.Diff([3]string{"spend_limit", keySpendText(b, bok), keySpendText(after, p != "")}); len(changes) > 0 {
		s.record(ctx, auditlog.Entry{AccountID: accountID, Action: auditlog.ActionKeySpendLimit,
			Target: keyTarget(keyID), Changes: changes})
	}
	return after, nil
}

// CreateWebhookEndpoint records the endpoint's URL and description; its
// signing secret is never a field.
func (s *auditStore) CreateWebhookEndpoint(ctx context.Context, e events.Endpoint, max int) error {
	if err := s.Store.CreateWebhookEndpoint(ctx, e, max); err != nil {
		return err
	}
	s.record(ctx, auditlog.Entry{AccountID: e.AccountID, Action: auditlog.ActionWebhookCreate,
		Target: auditlog.Target{Type: "webhook", ID: e.ID}, Changes: auditlog.Diff(
			[3]string{"url", "", e.URL}, [3]string{"description", "", e.Description})})
	return nil
}

func (s *auditStore) DeleteWebhookEndpoint(ctx context.Context, accountID, id string) error {
	var url string
	if eps, err := s.Store.WebhookEndpoints(ctx, accountID); err == nil {
		for _, e := range eps {
			if e.ID == id {
				url = e.URL
			}
		}
	}
	if err := s.Store.DeleteWebhookEndpoint(ctx, accountID, id); err != nil {
		return err
	}
	s.record(ctx, auditlog.Entry{AccountID: accountID, Action: auditlog.ActionWebhookDelete,
		Target: auditlog.Target{Type: "webhook", ID: id}, Changes: auditlog.Diff([3]string{"url", url, ""})})
	return nil
}

func decimalsText(l []decimal.Decimal) string {
	s := make([]string, len(l))
	for i, d := range l {
		s[i] = d.String()
	}
	return listText(s)
}

func (s *auditStore) SetAlertThresholds(ctx context.Context, accountID string, low []decimal.Decimal) error {
	defer s.lock("alerts:" + accountID)()
	before, _ := s.Store.AlertThresholds(ctx, accountID)
	if err := s.Store.SetAlertThresholds(ctx, accountID, low); err != nil {
		return err
	}
	if changes := auditlog.Diff([3]string{"low_balance", decimalsText(before), decimalsText(low)}); len(changes) > 0 {
		s.record(ctx, auditlog.Entry{AccountID: accountID, Action: auditlog.ActionAlertsUpdate,
			Target: auditlog.Target{Type: "alerts", ID: accountID}, Changes: changes})
	}
	return nil
}

// InMemory forwards the capability (see store.InMemory).
func (s *auditStore) InMemory() bool {
	m, ok := s.Store.(store.InMemory)
	return ok && m.InMemory()
}

func itoa(n int) string { return strconv.Itoa(n) }
