// Package auditlog records who did what to an account: every management
// action (keys created, revoked, rotated; credits granted; an account, plan,
// password or session changed) as an Entry with its actor, target, the
// fields it changed (before and after, never secrets), the time, and the
// client's address and user agent.
//
// The keyledger facade appends the entries itself, so every host gets them;
// a host sets the actor and client once per request in middleware
// (WithActor, WithClient) and the facade reads them from the context. A
// host may also Append its own actions through the Service.
//
// Entries are read newest first with a cursor (List), filtered by action,
// actor and time range, and pruned in bounded batches past a retention
// (Prune, which a host calls periodically).
package auditlog

import (
	"context"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/keyledger/keyledger/errkind"
)

// Errors of the package.
var (
	// ErrInvalidEntry reports an Entry without an account, action or
	// actor kind, or with a field past its length limit.
	ErrInvalidEntry = errkind.New(errkind.Invalid, "auditlog: invalid entry")
	// ErrDuplicateEntry reports an Entry whose ID the store already holds
	// (an action recorded once already, such as a replayed credit).
	ErrDuplicateEntry = errkind.New(errkind.Conflict, "auditlog: duplicate entry")
	// ErrInvalidOptions reports unusable Options or a nil Store.
	ErrInvalidOptions = errkind.New(errkind.Invalid, "auditlog: invalid options")
	// ErrInvalidCursor reports a cursor List did not issue.
	ErrInvalidCursor = errkind.New(errkind.Invalid, "auditlog: invalid cursor")
	// ErrInvalidQuery reports a filter that cannot match (an unknown actor
	// kind, a time range that ends before it starts).
	ErrInvalidQuery = errkind.New(errkind.Invalid, "auditlog: invalid query")
)

// ActorKind says who acted.
type ActorKind string

// The actor kinds.
const (
	// ActorSession is a customer signed in to a management session; the
	// actor ID is the session's account ID.
	ActorSession ActorKind = "session"
	// ActorKey is an API key acting on its own account; the ID is the key ID.
	ActorKey ActorKind = "key"
	// ActorAdmin is an operator (an admin tool: "cli", a user name).
	ActorAdmin ActorKind = "admin"
	// ActorSystem is the library or host acting on its own (signup grants,
	// expiries, closure of keys); the default when no actor is set.
	ActorSystem ActorKind = "system"
)

func (k ActorKind) valid() bool {
	switch k {
	case ActorSession, ActorKey, ActorAdmin, ActorSystem:
		return true
	}
	return false
}

// Actor is who performed an action.
type Actor struct {
	Kind ActorKind `json:"kind"`
	ID   string    `json:"id,omitempty"`
}

// String is "kind:id" (or "kind").
func (a Actor) String() string {
	if a.ID == "" {
		return string(a.Kind)
	}
	return string(a.Kind) + ":" + a.ID
}

// ParseActor parses "kind:id" or "kind" (the filter syntax of List).
func ParseActor(s string) (Actor, error) {
	kind, id, _ := strings.Cut(s, ":")
	a := Actor{Kind: ActorKind(kind), ID: id}
	if !a.Kind.valid() || len(id) > MaxIDLen || !storable(id) {
		return Actor{}, ErrInvalidQuery
	}
	return a, nil
}

// Target is what an action was done to ("key" key_…, "account" acct_…,
// "credits" the ledger entry, "session").
type Target struct {
	Type string `json:"type"`
	ID   string `json:"id,omitempty"`
}

// Change is one changed field: its value before and after, as text. The
// library never records a secret (raw key, hash, password, token, webhook
// secret): a change of one appears with empty values.
type Change struct {
	Field  string `json:"field"`
	Before string `json:"before,omitempty"`
	After  string `json:"after,omitempty"`
}

// Entry is one recorded action.
type Entry struct {
	// ID is unique ("aud_…"); Seq is the store's order of appends, which
	// List pages by.
	ID        string    `json:"id"`
	Seq       int64     `json:"-"`
	Time      time.Time `json:"time"`
	AccountID string    `json:"account_id"`
	Actor     Actor     `json:"actor"`
	// Action is "noun.verb": key.create, key.revoke, credits.grant, …
	Action    string   `json:"action"`
	Target    Target   `json:"target"`
	Changes   []Change `json:"changes,omitempty"`
	ClientIP  string   `json:"client_ip,omitempty"`
	UserAgent string   `json:"user_agent,omitempty"`
}

// Length limits of an entry's fields. The Service truncates the user agent
// and a change's values (free text from clients) and refuses the rest.
const (
	MaxIDLen        = 128
	MaxActionLen    = 64
	MaxUserAgentLen = 256
	MaxValueLen     = 512
	MaxChanges      = 32
)

// Validate reports ErrInvalidEntry for an entry a store must not hold.
func (e *Entry) Validate() error {
	switch {
	case e.AccountID == "", len(e.AccountID) > MaxIDLen, e.Action == "", len(e.Action) > MaxActionLen,
		!e.Actor.Kind.valid(), len(e.Actor.ID) > MaxIDLen, len(e.Target.Type) > MaxActionLen,
		len(e.Target.ID) > MaxIDLen, len(e.Changes) > MaxChanges, len(e.ClientIP) > 64,
		len(e.UserAgent) > MaxUserAgentLen:
		return ErrInvalidEntry
	}
	if !storable(e.ID, e.AccountID, e.Action, e.Actor.ID, e.Target.Type, e.Target.ID, e.ClientIP, e.UserAgent) {
		return ErrInvalidEntry
	}
	for _, c := range e.Changes {
		if c.Field == "" || len(c.Field) > MaxActionLen || len(c.Before) > MaxValueLen || len(c.After) > MaxValueLen ||
			!storable(c.Field, c.Before, c.After) {
			return ErrInvalidEntry
		}
	}
	return nil
}

// storable reports whether every s is text a store can hold and compare:
// valid UTF-8 without NUL (PostgreSQL refuses both with an error, which a
// client's filter must not turn into a 500).
func storable(ss ...string) bool {
	for _, s := range ss {
		if !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0 {
			return false
		}
	}
	return true
}

// Truncate cuts s to at most n bytes at a rune boundary, replacing invalid
// UTF-8 and NUL bytes (which no SQL store holds) with U+FFFD.
func Truncate(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.ReplaceAll(s, "\x00", "\uFFFD")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// Query selects a page of one account's entries, newest first.
type Query struct {
	AccountID string
	// Action matches exactly; a trailing ".*" matches a prefix ("key.*").
	Action string
	// Actor matches the actor's kind, and its ID when set.
	Actor Actor
	// Since and Until bound Time to [Since, Until); zero: unbounded.
	Since, Until time.Time
	// Cursor is the NextCursor of the previous page ("" for the first).
	Cursor string
	// Limit is clamped to 1..500 (50 when 0).
	Limit int
}

// Page is one page of entries, newest first.
type Page struct {
	Entries    []Entry `json:"data"`
	NextCursor string  `json:"next_cursor,omitempty"` // "" on the last page
}

// StoreQuery is a Query as a store runs it: BeforeSeq is the decoded cursor
// (0: from the newest), Limit already clamped.
type StoreQuery struct {
	AccountID    string
	Action       string // exact, or a prefix ending in "." when ActionPrefix
	ActionPrefix bool
	Actor        Actor // zero Kind: any
	Since, Until time.Time
	BeforeSeq    int64
	Limit        int
}

// Store is what the audit log needs of a backend.
type Store interface {
	// AppendAudit stores e (already validated) and returns it with Seq set:
	// larger than every Seq the store handed out before, so that a page
	// read with BeforeSeq never shows an entry twice or skips one that
	// existed when the first page was read. A duplicate ID is
	// ErrDuplicateEntry, and changes nothing.
	AppendAudit(ctx context.Context, e Entry) (Entry, error)
	// ListAudit returns up to q.Limit entries of q.AccountID matching the
	// filters with Seq < q.BeforeSeq (all when 0), by Seq descending. An
	// account with no entries gives an empty slice, not an error.
	ListAudit(ctx context.Context, q StoreQuery) ([]Entry, error)
	// PruneAudit deletes at most limit entries (of any account) with Time
	// before cutoff, oldest first, in one transaction, and returns how
	// many it deleted.
	PruneAudit(ctx context.Context, cutoff time.Time, limit int) (int, error)
}

func encodeCursor(seq int64) string { return "a" + strconv.FormatInt(seq, 36) }

func decodeCursor(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	if len(s) < 2 || len(s) > 14 || s[0] != 'a' {
		return 0, ErrInvalidCursor
	}
	n, err := strconv.ParseInt(s[1:], 36, 64)
	if err != nil || n <= 0 {
		return 0, ErrInvalidCursor
	}
	return n, nil
}

// ClampLimit is List's limit rule: 0 gives 50, the rest is clamped to 1..500.
func ClampLimit(n int) int {
	switch {
	case n == 0:
		return 50
	case n < 1:
		return 1
	case n > 500:
		return 500
	}
	return n
}

type ctxKey int

const (
	actorKey ctxKey = iota
	clientKey
)

type client struct{ ip, ua string }

// WithActor returns ctx carrying the actor of the actions done with it.
func WithActor(ctx context.Context, a Actor) context.Context {
	return context.WithValue(ctx, actorKey, a)
}

// WithClient returns ctx carrying the client's address and user agent
// (truncated to MaxUserAgentLen bytes).
func WithClient(ctx context.Context, ip, userAgent string) context.Context {
	return context.WithValue(ctx, clientKey, client{Truncate(ip, 64), Truncate(userAgent, MaxUserAgentLen)})
}

// ActorFrom returns the actor ctx carries, and false if none (the system).
func ActorFrom(ctx context.Context) (Actor, bool) {
	a, ok := ctx.Value(actorKey).(Actor)
	return a, ok
}

// ClientFrom returns the client address and user agent ctx carries.
func ClientFrom(ctx context.Context) (ip, userAgent string) {
	c, _ := ctx.Value(clientKey).(client)
	return c.ip, c.ua
}

// The actions the keyledger facade records. A host's own actions follow the
// same "noun.verb" form (webhook.create, limit.update, …).
const (
	ActionAccountCreate   = "account.create"
	ActionAccountUpdate   = "account.update"
	ActionAccountClose    = "account.close"
	ActionPlanChange      = "plan.change"
	ActionPasswordChange  = "password.change"
	ActionPasswordReset   = "password.reset_request"
	ActionEmailVerifySent = "email.verification_send"
	ActionEmailVerify     = "email.verify"
	ActionSessionCreate   = "session.create"
	ActionSessionRevoke   = "session.revoke"
	ActionSessionsRevoke  = "session.revoke_all"
	ActionKeyCreate       = "key.create"
	ActionKeyUpdate       = "key.update"
	ActionKeyRevoke       = "key.revoke"
	ActionKeyDisable      = "key.disable"
	ActionKeyExpire       = "key.expire"
	ActionKeyRotate       = "key.rotate"
	ActionCreditsPolicy   = "credits.policy_change"
	ActionKeySpendLimit   = "key.spend_limit"
	ActionWebhookCreate   = "webhook.create"
	ActionWebhookDelete   = "webhook.delete"
	ActionAlertsUpdate    = "alerts.update"
	// Credits are "credits." + the entry type: credits.grant,
	// credits.purchase, credits.refund, credits.adjustment.
	ActionCreditsPrefix = "credits."
)
