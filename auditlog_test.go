package keyledger_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/auditlog"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/internal/storewrap"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/memstore"
)

// auditActions lists an account's audit entries, oldest first.
func auditActions(t *testing.T, e *env, accountID string) []auditlog.Entry {
	t.Helper()
	var all []auditlog.Entry
	q := auditlog.Query{AccountID: accountID, Limit: 500}
	for {
		p, err := e.kl.Audit.List(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, p.Entries...)
		if p.NextCursor == "" {
			break
		}
		q.Cursor = p.NextCursor
	}
	for i, j := 0, len(all)-1; i < j; i, j = i+1, j-1 {
		all[i], all[j] = all[j], all[i]
	}
	return all
}

func actionsOf(es []auditlog.Entry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.Action
	}
	return out
}

// Every management change made through the facade's services is recorded
// by the library, with the context's actor and client, the changed fields
// and never a secret; failed changes are not recorded.
func TestAuditLogRecordsManagement(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, nil)
		bg := context.Background()
		a, err := e.kl.Signup(bg, account.CreateParams{Name: "Asha", Email: "asha@example.com", Password: "first password 1", Plan: "free"})
		if err != nil {
			t.Fatal(err)
		}
		other, _, otherKey := e.signup(t, "other@example.com", "free")
		ctx := auditlog.WithClient(auditlog.WithActor(bg, auditlog.Actor{Kind: auditlog.ActorSession, ID: a.ID}), "198.51.100.4", "test-agent/1")

		raw, k, err := e.kl.Keys.Create(ctx, apikey.CreateParams{AccountID: a.ID, Name: "prod"})
		if err != nil {
			t.Fatal(err)
		}
		name := "renamed"
		if _, err := e.kl.Keys.Update(ctx, a.ID, k.ID, apikey.UpdateParams{Name: &name}); err != nil {
			t.Fatal(err)
		}
		raw2, _, err := e.kl.Keys.Rotate(ctx, a.ID, k.ID, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		// Failed changes: another tenant's key, a bad amount, a wrong password.
		if _, err := e.kl.Keys.Revoke(ctx, a.ID, otherKey.ID); !errors.Is(err, apikey.ErrNotFound) {
			t.Fatalf("revoke another tenant's key: %v", err)
		}
		if _, err := e.kl.Credits.Grant(ctx, credits.CreditParams{AccountID: a.ID, Amount: credits.AmountFromInt(-5), IdempotencyKey: "bad"}); err == nil {
			t.Fatal("negative grant accepted")
		}
		if _, _, err := e.kl.Accounts.ChangePassword(ctx, a.ID, "wrong password 1", "second password 2"); err == nil {
			t.Fatal("wrong current password accepted")
		}
		if _, err := e.kl.Keys.Revoke(ctx, a.ID, k.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := e.kl.Keys.Revoke(ctx, a.ID, k.ID); err != nil && !errors.Is(err, apikey.ErrRevoked) {
			t.Fatal(err) // a repeated revoke changes nothing and is not recorded again
		}
		gp := credits.CreditParams{AccountID: a.ID, Amount: credits.AmountFromInt(7), Reference: "promo", IdempotencyKey: "g1"}
		for range 2 { // the replay is recorded once
			if _, err := e.kl.Credits.Grant(ctx, gp); err != nil {
				t.Fatal(err)
			}
		}
		plan := "pro"
		if _, err := e.kl.UpdateAccount(ctx, a.ID, account.UpdateParams{Plan: &plan}); err != nil {
			t.Fatal(err)
		}
		tok, _, err := e.kl.Accounts.Login(bg, "asha@example.com", "first password 1")
		if err != nil {
			t.Fatal(err)
		}
		tok2, _, err := e.kl.Accounts.ChangePassword(ctx, a.ID, "first password 1", "second password 2")
		if err != nil {
			t.Fatal(err)
		}
		if err := e.kl.Accounts.Logout(ctx, tok2); err != nil {
			t.Fatal(err)
		}
		admin := auditlog.WithActor(bg, auditlog.Actor{Kind: auditlog.ActorAdmin, ID: "cli"})
		if _, err := e.kl.CloseAccount(admin, a.ID); err != nil {
			t.Fatal(err)
		}

		es := auditActions(t, e, a.ID)
		want := []string{
			"account.create", "credits.grant", // signup: the system
			"key.create", "key.update", "key.rotate", "key.revoke", "credits.grant",
			"plan.change",                                             // free and pro have the same ledger policy: no credits.policy_change
			"session.create",                                          // login
			"password.change", "session.revoke_all", "session.create", // change password
			"session.revoke", // logout
			"account.close",
		}
		got := actionsOf(es)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("actions\n got %v\nwant %v", got, want)
		}
		for _, en := range es {
			switch {
			case en.Action == "account.create" || (en.Action == "credits.grant" && en.Actor.Kind == auditlog.ActorSystem):
				if en.Actor.Kind != auditlog.ActorSystem {
					t.Errorf("%s by %v, want the system", en.Action, en.Actor)
				}
			case en.Action == "account.close":
				if en.Actor != (auditlog.Actor{Kind: auditlog.ActorAdmin, ID: "cli"}) {
					t.Errorf("close by %v", en.Actor)
				}
			case en.Action == "session.create" && en.ClientIP == "":
				if en.Actor != (auditlog.Actor{Kind: auditlog.ActorSession, ID: a.ID}) {
					t.Errorf("login by %v", en.Actor)
				}
			default:
				if en.Actor != (auditlog.Actor{Kind: auditlog.ActorSession, ID: a.ID}) || en.ClientIP != "198.51.100.4" || en.UserAgent != "test-agent/1" {
					t.Errorf("%s: actor %v client %q %q", en.Action, en.Actor, en.ClientIP, en.UserAgent)
				}
			}
			j, _ := json.Marshal(en)
			for _, secret := range []string{string(raw), string(raw2), string(tok), string(tok2), "first password", "second password"} {
				if strings.Contains(string(j), secret) {
					t.Errorf("%s entry holds a secret: %s", en.Action, j)
				}
			}
		}
		byAction := map[string]auditlog.Entry{}
		for _, en := range es {
			byAction[en.Action] = en
		}
		if c := byAction["key.update"].Changes; len(c) != 1 || c[0] != (auditlog.Change{Field: "name", Before: "prod", After: "renamed"}) {
			t.Errorf("key.update changes %+v", c)
		}
		if c := byAction["plan.change"].Changes; len(c) != 1 || c[0] != (auditlog.Change{Field: "plan", Before: "free", After: "pro"}) {
			t.Errorf("plan.change changes %+v", c)
		}
		for _, c := range byAction["account.create"].Changes {
			if (c.Field == "name" || c.Field == "email") && (c.Before != "" || c.After != "") {
				t.Errorf("account.create keeps personal data: %+v", c)
			}
		}
		if j, _ := json.Marshal(es); strings.Contains(string(j), "asha@example.com") || strings.Contains(string(j), "Asha") {
			t.Errorf("the closed account's email or name survives in its audit log: %s", j)
		}
		if en := byAction["key.revoke"]; en.Target != (auditlog.Target{Type: "key", ID: k.ID}) {
			t.Errorf("key.revoke target %+v", en.Target)
		}
		// The other tenant's log holds its own signup only.
		if got := actionsOf(auditActions(t, e, other.ID)); fmt.Sprint(got) != "[account.create credits.grant key.create]" {
			t.Errorf("other tenant's log: %v", got)
		}
	})
}

// Concurrent key creations are each recorded exactly once.
func TestAuditLogConcurrent(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, nil)
		a, _, _ := e.signup(t, "c@example.com", "free")
		var wg sync.WaitGroup
		for i := range 16 {
			wg.Go(func() {
				if _, _, err := e.kl.Keys.Create(context.Background(), apikey.CreateParams{AccountID: a.ID, Name: fmt.Sprint("k", i)}); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		n := 0
		seen := map[string]bool{}
		for _, en := range auditActions(t, e, a.ID) {
			if en.Action == "key.create" {
				n++
				if seen[en.Target.ID] {
					t.Errorf("key %s recorded twice", en.Target.ID)
				}
				seen[en.Target.ID] = true
			}
		}
		if n != 17 {
			t.Errorf("%d key.create entries, want 17", n)
		}
	})
}

// Concurrent changes of one key are recorded as a consistent chain: two
// revokes racing record one key.revoke, and renames each show the name
// just before them.
func TestAuditLogConcurrentChangesOfOneKey(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, nil)
		a, _, k := e.signup(t, "race@example.com", "free")
		ctx := context.Background()
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Go(func() {
				name := fmt.Sprint("name-", i)
				if _, err := e.kl.Keys.Update(ctx, a.ID, k.ID, apikey.UpdateParams{Name: &name}); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		for range 8 {
			wg.Go(func() {
				if _, err := e.kl.Keys.Revoke(ctx, a.ID, k.ID); err != nil && !errors.Is(err, apikey.ErrRevoked) {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		prev := "test" // the name signup gave it
		revokes := 0
		for _, en := range auditActions(t, e, a.ID) {
			switch en.Action {
			case "key.update":
				if len(en.Changes) != 1 || en.Changes[0].Before != prev {
					t.Fatalf("rename %+v does not follow %q", en.Changes, prev)
				}
				prev = en.Changes[0].After
			case "key.revoke":
				revokes++
			}
		}
		if revokes != 1 {
			t.Errorf("%d key.revoke entries for one revocation", revokes)
		}
	})
}

// Key spend limits, key rate limits, webhook endpoints and alert thresholds
// changed through the facade are recorded by the library on every backend,
// without the endpoint's signing secret; failed changes are not recorded.
func TestAuditLogLimitsAndWebhooks(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, nil)
		a, _, k := e.signup(t, "limits@example.com", "free")
		ctx := auditlog.WithActor(context.Background(), auditlog.Actor{Kind: auditlog.ActorSession, ID: a.ID})
		n0 := len(auditActions(t, e, a.ID))

		if _, err := e.kl.SetKeySpendLimit(ctx, a.ID, k.ID, &keyledger.SpendLimit{Amount: credits.AmountFromInt(5), Period: credits.PeriodDay}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.kl.SetKeySpendLimit(ctx, a.ID, k.ID, &keyledger.SpendLimit{Amount: credits.AmountFromInt(5), Period: credits.PeriodDay}); err != nil {
			t.Fatal(err) // unchanged: not recorded again
		}
		if _, err := e.kl.SetKeySpendLimit(ctx, a.ID, k.ID, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := e.kl.SetKeyRateLimits(ctx, a.ID, k.ID, apikey.RateLimits{RequestsPerMinute: 3}); err != nil {
			t.Fatal(err)
		}
		wh := e.kl.Webhooks()
		ep, err := wh.CreateEndpoint(ctx, a.ID, "https://93.184.216.34/hook", "alerts")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := wh.CreateEndpoint(ctx, a.ID, "https://127.0.0.1/hook", "refused"); err == nil {
			t.Fatal("loopback endpoint accepted")
		}
		if _, err := wh.SetAlertThresholds(ctx, a.ID, []decimal.Decimal{decimal.NewFromInt(100), decimal.NewFromInt(10)}); err != nil {
			t.Fatal(err)
		}
		if err := wh.DeleteEndpoint(ctx, a.ID, ep.ID); err != nil {
			t.Fatal(err)
		}
		if err := wh.DeleteEndpoint(ctx, a.ID, ep.ID); err == nil {
			t.Fatal("second delete succeeded")
		}

		es := auditActions(t, e, a.ID)[n0:]
		want := "[key.spend_limit key.spend_limit key.update webhook.create alerts.update webhook.delete]"
		if got := fmt.Sprint(actionsOf(es)); got != want {
			t.Fatalf("actions\n got %v\nwant %s", got, want)
		}
		if c := es[0].Changes; len(c) != 1 || c[0] != (auditlog.Change{Field: "spend_limit", After: "5 per day"}) || es[0].Target.ID != k.ID {
			t.Errorf("set limit: %+v", es[0])
		}
		if c := es[1].Changes; len(c) != 1 || c[0] != (auditlog.Change{Field: "spend_limit", Before: "5 per day"}) {
			t.Errorf("remove limit: %+v", es[1])
		}
		if c := es[2].Changes; len(c) != 1 || c[0].Field != "rate_limits" || !strings.Contains(c[0].After, `"requests_per_minute":3`) {
			t.Errorf("rate limits: %+v", es[2])
		}
		if es[3].Target != (auditlog.Target{Type: "webhook", ID: ep.ID}) || es[5].Target != es[3].Target {
			t.Errorf("webhook targets: %+v %+v", es[3].Target, es[5].Target)
		}
		if c := es[4].Changes; len(c) != 1 || c[0] != (auditlog.Change{Field: "low_balance", After: "100,10"}) {
			t.Errorf("thresholds: %+v", es[4])
		}
		for _, en := range es {
			if en.Actor != (auditlog.Actor{Kind: auditlog.ActorSession, ID: a.ID}) {
				t.Errorf("%s by %v", en.Action, en.Actor)
			}
			if j, _ := json.Marshal(en); strings.Contains(string(j), ep.Secret) {
				t.Errorf("%s holds the webhook secret", en.Action)
			}
		}
	})
}

// failingAudit is a store whose audit appends fail.
type failingAudit struct{ storewrap.Base }

func (failingAudit) AppendAudit(context.Context, auditlog.Entry) (auditlog.Entry, error) {
	return auditlog.Entry{}, errors.New("audit table unavailable")
}

// A failed audit append does not undo or fail the change it records: the
// change has committed. It is logged, without secrets.
func TestAuditAppendFailureIsLogged(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	kl, err := keyledger.New(store.Wrap(failingAudit{storewrap.Base{Store: store.Driver(memstore.New())}}), &keyledger.Options{Logger: log, Accounts: &account.Options{Argon2: fastArgon}})
	if err != nil {
		t.Fatal(err)
	}
	defer kl.Close(context.Background())
	ctx := context.Background()
	a, err := kl.Signup(ctx, account.CreateParams{Name: "F", Email: "f@example.com", Password: "a long password"})
	if err != nil {
		t.Fatal(err)
	}
	raw, k, err := kl.Keys.Create(ctx, apikey.CreateParams{AccountID: a.ID, Name: "k"})
	if err != nil {
		t.Fatalf("the change failed with its audit append: %v", err)
	}
	if _, err := kl.Keys.Verify(ctx, raw); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if !strings.Contains(out, "audit entry not recorded") || !strings.Contains(out, "key.create") || !strings.Contains(out, k.ID) {
		t.Fatalf("log: %s", out)
	}
	if strings.Contains(out, string(raw)) || strings.Contains(out, "a long password") {
		t.Fatalf("a secret reached the log: %s", out)
	}
}
