// Package profiles defines, once, how each example system configures
// keyledger: key formats, ID prefixes, the ledger's unit, the plan catalog
// and the prices. The servers (examples/gateway, examples/toolapi,
// examples/emailverify) and the admin CLI (examples/keyctl) build their
// keyledger.Options from the same Profile, so that keys and accounts made by
// one are accepted by the other over the same store.
package profiles

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/shopspring/decimal"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/usage"
)

// ErrUnknownProfile is returned by Get for a name that is not in Names.
var ErrUnknownProfile = errors.New("profiles: unknown profile")

// Profile names.
const (
	Gateway     = "gateway"
	ToolAPI     = "toolapi"
	EmailVerify = "emailverify"
)

// Names lists the profiles Get knows.
func Names() []string { return []string{Gateway, ToolAPI, EmailVerify} }

// Operations priced by the toolapi and emailverify profiles.
const (
	// OpInspectDomain is OpenRush's domain inspection tool: 3 credits a call.
	OpInspectDomain = "/v1/tools/inspect_domain"
	// OpKeywordVolume is a cheaper OpenRush tool: 1 credit a call.
	OpKeywordVolume = "/v1/tools/keyword_volume"
	// OpVerify is one email verification: 1 credit, 0.5 when the result was
	// cached (a batch's emails are priced the same way).
	OpVerify = "verify"
)

// Profile is the keyledger configuration of one example system.
type Profile struct {
	Name string
	// Unit is the ledger's unit.
	Unit credits.Unit
	// Catalog is the plan catalog; its plans' signup grants are credited by
	// keyledger.Signup.
	Catalog *account.Catalog
	// Format issues and parses the system's keys; DefaultKeyType is the
	// type of a key created without one.
	Format         *apikey.Format
	DefaultKeyType string
	// ID prefixes of accounts, keys and usage records.
	AccountIDPrefix, KeyIDPrefix, UsageIDPrefix string
	// Prices prices the system's operations (nil for the gateway, whose
	// model prices come from its -models file).
	Prices *usage.PriceBook
	// TimeZone is the IANA zone of the accounts the system's sign-ups make
	// ("" is UTC): the gateway's are IST, Asia/Kolkata.
	TimeZone string
	// MonthlyGrants are subscription credits by plan ID: granted at the
	// start of each calendar month of the account's time zone and expiring
	// at its end (see examples/internal/subscription). Plans listed here
	// have no signup grant. Nil for profiles without subscriptions.
	MonthlyGrants map[string]decimal.Decimal
}

// Get returns the named profile.
func Get(name string) (Profile, error) {
	switch name {
	case Gateway:
		return gateway()
	case ToolAPI:
		return toolAPI()
	case EmailVerify:
		return emailVerify()
	}
	return Profile{}, fmt.Errorf("%w %q (want one of %v)", ErrUnknownProfile, name, Names())
}

// Options returns keyledger options for the profile with the given clock
// (time.Now if nil) and logger. The result is fresh on every call: callers
// may change it (e.g. set Limiter or Prices) before keyledger.New.
func (p Profile) Options(now func() time.Time, log *slog.Logger) *keyledger.Options {
	return &keyledger.Options{
		Now: now, Logger: log, Catalog: p.Catalog, Prices: p.Prices,
		Accounts: &account.Options{IDPrefix: p.AccountIDPrefix},
		Keys:     &apikey.Options{IDPrefix: p.KeyIDPrefix, Format: p.Format},
		Credits:  &credits.Options{Unit: p.Unit},
		Usage:    &usage.Options{IDPrefix: p.UsageIDPrefix},
	}
}

// KeyTypes returns the names of the profile's key types.
func (p Profile) KeyTypes() []string {
	var out []string
	for _, t := range p.Format.Types() {
		out = append(out, t.Name)
	}
	return out
}

// HasKeyType reports whether the profile issues keys of the named type.
func (p Profile) HasKeyType(name string) bool { return slices.Contains(p.KeyTypes(), name) }

func gateway() (Profile, error) {
	f, err := apikey.NewFormat(apikey.FormatConfig{Types: []apikey.KeyType{
		{Name: "sdk", Prefix: "forii_sk_"},
		{Name: "api", Prefix: "forii_"},
	}})
	if err != nil {
		return Profile{}, err
	}
	return Profile{
		Name: Gateway, Unit: credits.INR(), Catalog: account.DefaultCatalog(),
		Format: f, DefaultKeyType: "sdk",
		AccountIDPrefix: "acct_", KeyIDPrefix: "key_", UsageIDPrefix: "usage_",
		TimeZone: "Asia/Kolkata",
	}, nil
}

// ToolAPISignupGrant is what a new OpenRush account receives: 500 credits.
const ToolAPISignupGrant = 500

func toolAPI() (Profile, error) {
	f, err := apikey.NewFormat(apikey.FormatConfig{
		Types:     []apikey.KeyType{{Name: "api", Prefix: "or_"}},
		HintChars: 6, // "or_abc123..."
	})
	if err != nil {
		return Profile{}, err
	}
	cat, err := account.NewCatalog("free", account.Plan{
		ID: "free", Name: "Free",
		Limits:      account.Limits{RequestsPerMinute: 600},
		SignupGrant: decimal.NewFromInt(ToolAPISignupGrant),
	})
	if err != nil {
		return Profile{}, err
	}
	pb, err := usage.NewPriceBook(nil, []usage.OperationPrice{
		{Operation: OpInspectDomain, PerUnit: decimal.NewFromInt(3)},
		{Operation: OpKeywordVolume, PerUnit: decimal.NewFromInt(1)},
	})
	if err != nil {
		return Profile{}, err
	}
	return Profile{
		Name: ToolAPI, Unit: credits.WholeCredits(), Catalog: cat,
		Format: f, DefaultKeyType: "api",
		AccountIDPrefix: "acct_", KeyIDPrefix: "cred_", UsageIDPrefix: "log_",
		Prices: pb,
	}, nil
}

func emailVerify() (Profile, error) {
	f, err := apikey.NewFormat(apikey.FormatConfig{Types: []apikey.KeyType{
		{Name: "live", Prefix: "kw_live_", Environment: apikey.EnvLive},
		{Name: "test", Prefix: "kw_test_", Environment: apikey.EnvTest},
	}})
	if err != nil {
		return Profile{}, err
	}
	lim := account.Limits{RequestsPerMinute: 600}
	// Plans renew their credits monthly (MonthlyGrants) instead of a
	// one-off signup grant; the monthly limit equals the month's grant.
	grants := map[string]decimal.Decimal{}
	plan := func(id, name string, grant, monthly int64) account.Plan {
		grants[id] = decimal.NewFromInt(grant)
		return account.Plan{ID: id, Name: name, Limits: lim, MonthlyCap: decimal.NewFromInt(monthly)}
	}
	cat, err := account.NewCatalog("free",
		plan("free", "Free", 100, 100),
		plan("starter", "Starter", 5_000, 5_000),
		plan("professional", "Professional", 25_000, 25_000),
		plan("business", "Business", 100_000, 100_000),
	)
	if err != nil {
		return Profile{}, err
	}
	pb, err := usage.NewPriceBook(nil, []usage.OperationPrice{
		{Operation: OpVerify, PerUnit: decimal.NewFromInt(1), PerCachedUnit: decimal.New(5, -1)},
	})
	if err != nil {
		return Profile{}, err
	}
	return Profile{
		Name: EmailVerify, Unit: credits.HalfCredits(), Catalog: cat,
		Format: f, DefaultKeyType: "live",
		AccountIDPrefix: "usr_", KeyIDPrefix: "key_", UsageIDPrefix: "ver_",
		Prices: pb, MonthlyGrants: grants,
	}, nil
}
