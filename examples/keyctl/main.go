// Command keyctl is the admin CLI of the example systems: it creates
// accounts and keys, moves credits and reads balances and usage directly in
// the store, with JSON output. It works while a server runs on the same
// SQLite file (WAL mode; every command is a few short transactions).
//
//	keyctl -db FILE [-postgres DSN] [-profile gateway|toolapi|emailverify] <command>
//
// Commands:
//
//	account create -name N -email E [-password P] [-plan P] [-timezone Z]
//	account get ID
//	account set-plan -plan P ID
//	account close ID
//	key create -account ID -name N [-models m1,m2] [-scopes s1,s2] [-type T] [-expires RFC3339]
//	key list -account ID
//	key revoke -account ID KEYID
//	key limit -account ID (-amount X -period day|week|month|lifetime | -clear) KEYID
//	credits grant|adjust -account ID -amount X -reason R [-idempotency-key K]
//	balance -account ID
//	usage -account ID [-from YYYY-MM-DD -to YYYY-MM-DD -group-by date,model,key,endpoint]
//	audit -account ID [-action A|prefix.*] [-actor kind[:id]] [-since T] [-until T] [-limit N] [-cursor C]
//	migrate -from-db FILE -to-postgres DSN [-batch N]   (copy SQLite into PostgreSQL, resumable, verified)
//
// The profile sets the key formats, ID prefixes, ledger unit and plans, so
// that what keyctl creates is what the profile's server accepts.
//
// keyctl's own changes are recorded in the account's audit log with the
// actor admin:cli.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/auditlog"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/examples/internal/profiles"
	"github.com/keyledger/keyledger/examples/internal/server"
	"github.com/keyledger/keyledger/examples/internal/subscription"
	"github.com/keyledger/keyledger/internal/id"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// Exit codes.
const (
	exitOK    = 0
	exitError = 1 // the command failed
	exitUsage = 2 // the command line is wrong
)

// errUsage marks command-line mistakes.
var errUsage = errors.New("usage")

func usageErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, args...))
}

const usageText = `usage: keyctl -db FILE [-postgres DSN] [-profile gateway|toolapi|emailverify] <command>

commands:
  account create -name N -email E [-password P] [-plan P] [-timezone Z]
  account get ID
  key create -account ID -name N [-models m1,m2] [-type T] [-expires RFC3339]
  key list -account ID
  key revoke -account ID KEYID
  key limit -account ID (-amount X -period day|week|month|lifetime | -clear) KEYID
  credits grant|adjust -account ID -amount X -reason R [-idempotency-key K] [-expires RFC3339]
  balance -account ID
  usage -account ID [-from YYYY-MM-DD] [-to YYYY-MM-DD] [-group-by date,model,key,endpoint]
  audit -account ID [-action A|prefix.*] [-actor kind[:id]] [-since RFC3339] [-until RFC3339] [-limit N] [-cursor C]

  keyctl migrate -from-db FILE -to-postgres DSN [-batch N]
`

// run executes one command and returns the process exit code. Results go
// to stdout as JSON; errors to stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "migrate" { // its own flags: see migrate.go
		return runMigrate(ctx, args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("keyctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usageText) }
	db := fs.String("db", "keyledger.db", "SQLite database file (the server's -db)")
	pg := fs.String("postgres", "", "PostgreSQL DSN instead of -db (several processes or hosts on one database)")
	prof := fs.String("profile", profiles.Gateway, "gateway, toolapi or emailverify")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return exitUsage
	}
	p, err := profiles.Get(*prof)
	if err != nil {
		fmt.Fprintln(stderr, "keyctl:", err)
		return exitUsage
	}
	cmd, ok := lookup(fs.Args())
	if !ok {
		fmt.Fprintf(stderr, "keyctl: unknown command %q\n%s", strings.Join(fs.Args(), " "), usageText)
		return exitUsage
	}
	c := &cli{profile: p, stdout: stdout, stderr: stderr}
	// Parse the command's flags before opening the store.
	exec, err := cmd.parse(c, fs.Args()[cmd.words:])
	if err != nil {
		fmt.Fprintln(stderr, "keyctl:", err)
		return exitUsage
	}
	if err := c.open(ctx, *db, *pg); err != nil {
		fmt.Fprintln(stderr, "keyctl:", err)
		return exitError
	}
	// Every change keyctl makes is the operator's: the audit log says so.
	err = exec(auditlog.WithActor(ctx, auditlog.Actor{Kind: auditlog.ActorAdmin, ID: "cli"}))
	if cerr := c.close(); err == nil {
		err = cerr
	}
	if err != nil {
		fmt.Fprintln(stderr, "keyctl:", err)
		if errors.Is(err, errUsage) {
			return exitUsage
		}
		return exitError
	}
	return exitOK
}

// cli is one invocation's state.
type cli struct {
	profile        profiles.Profile
	stdout, stderr io.Writer
	kl             *keyledger.KeyLedger
	closeStore     func() error
}

func (c *cli) open(ctx context.Context, db, pg string) error {
	log := slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	st, err := server.OpenStore(ctx, db, pg, false, log)
	if err != nil {
		return err
	}
	opts := c.profile.Options(nil, log)
	// An admin tool writes last-used times never and reads keys once.
	opts.Keys.LastUsedInterval = -1
	kl, err := keyledger.New(st, opts)
	if err != nil {
		_ = st.Close()
		return err
	}
	c.kl, c.closeStore = kl, st.Close
	return nil
}

func (c *cli) close() error {
	if c.kl == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return errors.Join(c.kl.Close(ctx), c.closeStore())
}

func (c *cli) print(v any) error {
	enc := json.NewEncoder(c.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// command is one keyctl command: words names it ("account create" is 2),
// parse reads its flags and returns what to run.
type command struct {
	words int
	parse func(c *cli, args []string) (func(context.Context) error, error)
}

func lookup(args []string) (command, bool) {
	one := map[string]func(*cli, []string) (func(context.Context) error, error){
		"balance": (*cli).balance,
		"usage":   (*cli).usage,
		"audit":   (*cli).audit,
	}
	two := map[string]func(*cli, []string) (func(context.Context) error, error){
		"account create":   (*cli).accountCreate,
		"account get":      (*cli).accountGet,
		"account set-plan": (*cli).accountSetPlan,
		"account close":    (*cli).accountClose,
		"key create":       (*cli).keyCreate,
		"key list":         (*cli).keyList,
		"key revoke":       (*cli).keyRevoke,
		"key limit":        (*cli).keyLimit,
		"credits grant":    func(c *cli, a []string) (func(context.Context) error, error) { return c.creditsChange(a, "grant") },
		"credits adjust":   func(c *cli, a []string) (func(context.Context) error, error) { return c.creditsChange(a, "adjust") },
	}
	if f, ok := one[args[0]]; ok {
		return command{1, f}, true
	}
	if len(args) >= 2 {
		if f, ok := two[args[0]+" "+args[1]]; ok {
			return command{2, f}, true
		}
	}
	return command{}, false
}

// flags returns a FlagSet for a command; parse accepts flags before and
// after positional arguments ("key revoke KEYID -account ID" works too).
func (c *cli) flags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	return fs
}

func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, fmt.Errorf("%w: %s: %v", errUsage, fs.Name(), err)
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func required(name, v string) error {
	if strings.TrimSpace(v) == "" {
		return usageErr("-%s is required", name)
	}
	return nil
}

func noArgs(cmd string, pos []string) error {
	if len(pos) > 0 {
		return usageErr("%s takes no arguments, got %q", cmd, pos)
	}
	return nil
}

// accountJSON is an account with its ledger.
type accountJSON struct {
	account.Account
	Unit    string          `json:"unit"`
	Balance *credits.Amount `json:"balance,omitempty"`
}

func (c *cli) accountCreate(args []string) (func(context.Context) error, error) {
	fs := c.flags("account create")
	name := fs.String("name", "", "account name")
	email := fs.String("email", "", "email address")
	password := fs.String("password", "", "password (optional: accounts without one cannot log in)")
	plan := fs.String("plan", "", "plan ID (the profile's default plan if empty)")
	tz := fs.String("timezone", c.profile.TimeZone, "IANA time zone (the profile's sign-up zone: Asia/Kolkata for gateway, UTC otherwise)")
	pos, err := parse(fs, args)
	if err == nil {
		err = errors.Join(noArgs("account create", pos), required("name", *name), required("email", *email))
	}
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) error {
		a, err := c.kl.Signup(ctx, account.CreateParams{
			Name: *name, Email: *email, Password: account.Secret(*password), Plan: *plan, TimeZone: *tz,
		})
		if err != nil {
			return err
		}
		if err := c.renew(ctx, a); err != nil {
			return err
		}
		return c.printAccount(ctx, a)
	}, nil
}

func (c *cli) printAccount(ctx context.Context, a account.Account) error {
	out := accountJSON{Account: a, Unit: c.profile.Unit.Code}
	b, err := c.kl.Credits.Balance(ctx, a.ID)
	switch {
	case err == nil:
		out.Balance = &b
	case !errors.Is(err, credits.ErrUnknownAccount):
		return err
	}
	return c.print(out)
}

func (c *cli) accountGet(args []string) (func(context.Context) error, error) {
	pos, err := parse(c.flags("account get"), args)
	if err != nil {
		return nil, err
	}
	if len(pos) != 1 {
		return nil, usageErr("account get takes one account ID")
	}
	return func(ctx context.Context) error {
		a, err := c.kl.Accounts.Get(ctx, pos[0])
		if err != nil {
			return err
		}
		return c.printAccount(ctx, a)
	}, nil
}

// accountSetPlan changes an account's plan (an operator's tool: customers
// never raise their own plan). The new limits apply at once.
func (c *cli) accountSetPlan(args []string) (func(context.Context) error, error) {
	fs := c.flags("account set-plan")
	plan := fs.String("plan", "", "plan ID: "+strings.Join(c.planIDs(), ", "))
	pos, err := parse(fs, args)
	if err == nil {
		err = required("plan", *plan)
	}
	if err != nil {
		return nil, err
	}
	if len(pos) != 1 {
		return nil, usageErr("account set-plan takes one account ID")
	}
	return func(ctx context.Context) error {
		a, err := c.kl.UpdateAccount(ctx, pos[0], account.UpdateParams{Plan: plan})
		if err != nil {
			return err
		}
		if err := c.renew(ctx, a); err != nil {
			return err
		}
		return c.printAccount(ctx, a)
	}, nil
}

// renew grants the account's subscription credits for the current period
// on profiles whose plans renew monthly (emailverify): at creation, and the
// difference at an upgrade. The servers ensure the same grant idempotently
// on the account's next use, so this only makes the balance right at once.
func (c *cli) renew(ctx context.Context, a account.Account) error {
	r, err := subscription.New(c.kl, c.profile.MonthlyGrants, nil)
	if err != nil {
		return err
	}
	return r.Ensure(ctx, a)
}

// planIDs lists the profile's plans.
func (c *cli) planIDs() []string {
	var ids []string
	for _, p := range c.profile.Catalog.Plans() {
		ids = append(ids, p.ID)
	}
	return ids
}

// accountClose closes an account for good: keys and sessions revoked,
// personal fields scrubbed, the ledger kept.
func (c *cli) accountClose(args []string) (func(context.Context) error, error) {
	pos, err := parse(c.flags("account close"), args)
	if err != nil {
		return nil, err
	}
	if len(pos) != 1 {
		return nil, usageErr("account close takes one account ID")
	}
	return func(ctx context.Context) error {
		a, err := c.kl.CloseAccount(ctx, pos[0])
		if err != nil {
			return err
		}
		return c.printAccount(ctx, a)
	}, nil
}

func (c *cli) keyCreate(args []string) (func(context.Context) error, error) {
	fs := c.flags("key create")
	acct := fs.String("account", "", "account ID")
	name := fs.String("name", "", "key name")
	models := fs.String("models", "", "comma-separated models the key may use (all if empty)")
	typ := fs.String("type", "", "key type: "+strings.Join(c.profile.KeyTypes(), ", ")+" (default "+c.profile.DefaultKeyType+")")
	expires := fs.String("expires", "", "expiry time, RFC 3339 (never if empty)")
	scopes := fs.String("scopes", "", "comma-separated scopes to narrow the key to (inference, read, manage); default: every scope, manage included, so an operator's first key can manage the rest")
	pos, err := parse(fs, args)
	if err == nil {
		err = errors.Join(noArgs("key create", pos), required("account", *acct), required("name", *name))
	}
	if err != nil {
		return nil, err
	}
	p := apikey.CreateParams{AccountID: *acct, Name: *name, Type: *typ}
	if *typ != "" && !c.profile.HasKeyType(*typ) {
		return nil, usageErr("-type %q: the %s profile has %v", *typ, c.profile.Name, c.profile.KeyTypes())
	}
	if *models != "" {
		for _, m := range strings.Split(*models, ",") {
			if m = strings.TrimSpace(m); m != "" {
				p.Models = append(p.Models, m)
			}
		}
	}
	for _, sc := range strings.Split(*scopes, ",") {
		if sc = strings.TrimSpace(sc); sc != "" {
			p.Scopes = append(p.Scopes, sc)
		}
	}
	if *expires != "" {
		t, err := time.Parse(time.RFC3339, *expires)
		if err != nil {
			return nil, usageErr("-expires: %v", err)
		}
		p.ExpiresAt = t
	}
	return func(ctx context.Context) error {
		raw, k, err := c.kl.Keys.Create(ctx, p)
		if err != nil {
			return err
		}
		return c.print(struct {
			Key    string        `json:"key"`
			APIKey apikey.APIKey `json:"api_key"`
			Note   string        `json:"note"`
		}{raw.Reveal(), k, "the key is shown only once"})
	}, nil
}

func (c *cli) keyList(args []string) (func(context.Context) error, error) {
	fs := c.flags("key list")
	acct := fs.String("account", "", "account ID")
	pos, err := parse(fs, args)
	if err == nil {
		err = errors.Join(noArgs("key list", pos), required("account", *acct))
	}
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) error {
		if _, err := c.kl.Accounts.Get(ctx, *acct); err != nil {
			return err
		}
		keys := []apikey.APIKey{}
		cursor := ""
		for {
			pg, err := c.kl.Keys.List(ctx, *acct, apikey.ListParams{Cursor: cursor, Limit: 500})
			if err != nil {
				return err
			}
			keys = append(keys, pg.Keys...)
			if pg.NextCursor == "" {
				break
			}
			cursor = pg.NextCursor
		}
		return c.print(map[string]any{"data": keys})
	}, nil
}

// keyRevoke needs the account: apikey addresses keys within their account
// and has no lookup by key ID alone.
func (c *cli) keyRevoke(args []string) (func(context.Context) error, error) {
	fs := c.flags("key revoke")
	acct := fs.String("account", "", "account ID of the key")
	pos, err := parse(fs, args)
	if err == nil {
		err = required("account", *acct)
	}
	if err == nil && len(pos) != 1 {
		err = usageErr("key revoke takes one key ID")
	}
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) error {
		k, err := c.kl.Keys.Revoke(ctx, *acct, pos[0])
		if err != nil {
			return err
		}
		return c.print(k)
	}, nil
}

// keyLimit sets or removes (-clear) a key's spend limit and prints the
// key's spend now: its limit, spent this period, remaining and reset time.
func (c *cli) keyLimit(args []string) (func(context.Context) error, error) {
	fs := c.flags("key limit")
	acct := fs.String("account", "", "account ID of the key")
	amount := fs.String("amount", "", "limit per period, in the profile's unit ("+c.profile.Unit.Code+")")
	period := fs.String("period", "", "day, week, month (calendar, in the account's time zone) or lifetime")
	clear := fs.Bool("clear", false, "remove the key's limit")
	pos, err := parse(fs, args)
	if err == nil {
		err = required("account", *acct)
	}
	if err == nil && len(pos) != 1 {
		err = usageErr("key limit takes one key ID")
	}
	if err == nil && *clear == (*amount != "" || *period != "") {
		err = usageErr("key limit takes -amount and -period, or -clear")
	}
	if err != nil {
		return nil, err
	}
	var l *keyledger.SpendLimit
	if !*clear {
		amt, err := credits.ParseAmount(*amount)
		if err != nil {
			return nil, usageErr("-amount %q: %v", *amount, err)
		}
		if !credits.Period(*period).Valid() {
			return nil, usageErr("-period must be day, week, month or lifetime")
		}
		l = &keyledger.SpendLimit{Amount: amt, Period: credits.Period(*period)}
	}
	return func(ctx context.Context) error {
		ks, err := c.kl.SetKeySpendLimit(ctx, *acct, pos[0], l)
		if err != nil {
			return err
		}
		if l == nil {
			return c.print(map[string]any{"key_id": pos[0], "spend_limit": nil})
		}
		return c.print(ks)
	}, nil
}

func (c *cli) creditsChange(args []string, kind string) (func(context.Context) error, error) {
	fs := c.flags("credits " + kind)
	acct := fs.String("account", "", "account ID")
	amount := fs.String("amount", "", "amount in the profile's unit ("+c.profile.Unit.Code+"); adjust may be negative")
	reason := fs.String("reason", "", "why (the ledger entry's description)")
	idem := fs.String("idempotency-key", "", "makes a retried command apply once (a fresh key if empty)")
	expires := fs.String("expires", "", "grant only: expiry time, RFC 3339")
	pos, err := parse(fs, args)
	if err == nil {
		err = errors.Join(noArgs("credits "+kind, pos), required("account", *acct), required("amount", *amount), required("reason", *reason))
	}
	if err != nil {
		return nil, err
	}
	amt, err := credits.ParseAmount(*amount)
	if err != nil {
		return nil, usageErr("-amount %q: %v", *amount, err)
	}
	p := credits.CreditParams{AccountID: *acct, Amount: amt, Description: *reason, Reference: "keyctl", IdempotencyKey: *idem}
	if p.IdempotencyKey == "" {
		p.IdempotencyKey = id.NewGenerator(time.Now).New("keyctl_")
	}
	if *expires != "" {
		if kind != "grant" {
			return nil, usageErr("-expires applies to grants only")
		}
		t, err := time.Parse(time.RFC3339, *expires)
		if err != nil {
			return nil, usageErr("-expires: %v", err)
		}
		p.ExpiresAt = t
	}
	return func(ctx context.Context) error {
		var e credits.Entry
		var err error
		if kind == "grant" {
			e, err = c.kl.Credits.Grant(ctx, p)
		} else {
			e, err = c.kl.Credits.Adjust(ctx, p)
		}
		if err != nil {
			return err
		}
		return c.print(e)
	}, nil
}

func (c *cli) balance(args []string) (func(context.Context) error, error) {
	fs := c.flags("balance")
	acct := fs.String("account", "", "account ID")
	pos, err := parse(fs, args)
	if err == nil {
		err = errors.Join(noArgs("balance", pos), required("account", *acct))
	}
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) error {
		a, err := c.kl.Credits.Account(ctx, *acct)
		if err != nil {
			return err
		}
		return c.print(a)
	}, nil
}

// audit lists an account's audit log, newest first, one page.
func (c *cli) audit(args []string) (func(context.Context) error, error) {
	fs := c.flags("audit")
	acct := fs.String("account", "", "account ID")
	action := fs.String("action", "", "action (key.create) or prefix (key.*)")
	actor := fs.String("actor", "", "session, key, admin or system, optionally :id")
	since := fs.String("since", "", "RFC 3339 time, inclusive")
	until := fs.String("until", "", "RFC 3339 time, exclusive")
	limit := fs.Int("limit", 50, "entries per page, 1-500")
	cursor := fs.String("cursor", "", "next_cursor of the previous page")
	pos, err := parse(fs, args)
	if err == nil {
		err = errors.Join(noArgs("audit", pos), required("account", *acct))
	}
	if err != nil {
		return nil, err
	}
	q := auditlog.Query{AccountID: *acct, Action: *action, Cursor: *cursor, Limit: *limit}
	if *limit < 1 || *limit > 500 {
		return nil, fmt.Errorf("%w: -limit must be 1-500", errUsage)
	}
	if *actor != "" {
		if q.Actor, err = auditlog.ParseActor(*actor); err != nil {
			return nil, fmt.Errorf("%w: -actor must be session, key, admin or system, optionally :id", errUsage)
		}
	}
	for _, t := range []struct {
		name, v string
		to      *time.Time
	}{{"since", *since, &q.Since}, {"until", *until, &q.Until}} {
		if t.v == "" {
			continue
		}
		if *t.to, err = time.Parse(time.RFC3339, t.v); err != nil {
			return nil, fmt.Errorf("%w: -%s must be an RFC 3339 time", errUsage, t.name)
		}
	}
	return func(ctx context.Context) error {
		p, err := c.kl.Audit.List(ctx, q)
		if err != nil {
			return err
		}
		return c.print(p)
	}, nil
}
