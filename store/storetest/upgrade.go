package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/usage"
)

// upgradeDropLaterSQL drops what the migrations after key_limits added
// (0010 events, 0011 audit), so that a downgrade below either can rerun
// them.
var upgradeDropLaterSQL = []string{
	`DROP INDEX api_keys_expiring`,
	`DROP TABLE key_expiry_notices`,
	`DROP TABLE alert_thresholds`,
	`DROP TABLE webhook_deliveries`,
	`DROP TABLE webhook_endpoints`,
	`DROP TABLE outbox_events`,
	`DROP TABLE audit_entries`,
}

// upgradeDropKeyLimitsSQL drops the columns of the per-key limits migration.
var upgradeDropKeyLimitsSQL = []string{
	`ALTER TABLE credit_accounts DROP COLUMN key_limits`,
	`ALTER TABLE credit_holds DROP COLUMN key_id`,
	`ALTER TABLE credit_holds DROP COLUMN key_epoch`,
	`ALTER TABLE api_keys DROP COLUMN rate_limits`,
}

// UpgradeKeyLimitsSQL lists the statements that turn a database of the
// current schema back into one from before the per-key limits migration
// (key_limits.sql), later migrations' tables first: both SQL backends run
// the same statements. The migration is named, not numbered, so that
// renumbering it changes nothing here.
var UpgradeKeyLimitsSQL = concatSQL(upgradeDropLaterSQL, upgradeDropKeyLimitsSQL, []string{
	`DELETE FROM schema_migrations WHERE version >= (SELECT version FROM schema_migrations WHERE name LIKE '%key_limits%')`,
})

// UpgradeTokenPartsSQL lists the statements that turn a database of the
// current schema back into one of schema version 6 (before migration
// 0008 added token parts and the applied price), in the order to run them:
// both SQL backends drop the same tables and columns.
var UpgradeTokenPartsSQL = concatSQL(upgradeDropLaterSQL, upgradeDropKeyLimitsSQL, []string{
	`ALTER TABLE usage_records DROP COLUMN cached_prompt_tokens`,
	`ALTER TABLE usage_records DROP COLUMN cache_write_tokens`,
	`ALTER TABLE usage_records DROP COLUMN reasoning_tokens`,
	`ALTER TABLE usage_records DROP COLUMN price_from`,
	`ALTER TABLE usage_rollups DROP COLUMN cached_prompt_tokens`,
	`ALTER TABLE usage_rollups DROP COLUMN cache_write_tokens`,
	`ALTER TABLE usage_rollups DROP COLUMN reasoning_tokens`,
	`DELETE FROM schema_migrations WHERE version > 6`,
})

func concatSQL(parts ...[]string) []string {
	var out []string
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

var upgradeDay = time.Date(2026, 3, 1, 9, 30, 0, 0, time.UTC)

func upgradeServices(t *testing.T, st store.Store) (*credits.Service, *usage.Service) {
	t.Helper()
	clock := func() time.Time { return upgradeDay }
	led, err := credits.NewService(st, &credits.Options{Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := usage.NewService(st, &usage.Options{Now: clock, Credits: led})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close(context.Background()); _ = led.Close(context.Background()) })
	return led, svc
}

// SeedUsageBeforeUpgrade meters one plain LLM record on st, as a database
// of schema version 6 holds it. Run UpgradeTokenPartsSQL on the database
// after closing st, reopen it and call CheckUsageAfterUpgrade.
func SeedUsageBeforeUpgrade(t *testing.T, st store.Store) {
	t.Helper()
	ctx := context.Background()
	led, svc := upgradeServices(t, st)
	if _, err := led.Open(ctx, "acct_up", credits.Policy{}); err != nil {
		t.Fatal(err)
	}
	if _, err := led.Purchase(ctx, credits.CreditParams{AccountID: "acct_up", Amount: credits.AmountFromInt(10), IdempotencyKey: "fund"}); err != nil {
		t.Fatal(err)
	}
	_, err := svc.Meter(ctx, usage.MeterParams{IdempotencyKey: "old", Record: usage.Record{AccountID: "acct_up", Model: "m",
		Endpoint: "/v1/chat/completions", StatusCode: 200, PromptTokens: 100, CompletionTokens: 10, Cost: credits.AmountFromMinor(3, 1)}})
	if err != nil {
		t.Fatal(err)
	}
	_ = svc.Close(ctx)
	_ = led.Close(ctx)
}

// CheckUsageAfterUpgrade checks a database seeded by SeedUsageBeforeUpgrade
// and upgraded: the old record reads with zero token parts and no price
// version, its rollup row too, and a new record with parts adds to that
// same rollup row.
func CheckUsageAfterUpgrade(t *testing.T, st store.Store) {
	t.Helper()
	ctx := context.Background()
	_, svc := upgradeServices(t, st)
	pg, err := svc.List(ctx, usage.ListQuery{AccountID: "acct_up", Limit: 10})
	if err != nil || len(pg.Records) != 1 {
		t.Fatalf("records after upgrade: %+v %v", pg, err)
	}
	old := pg.Records[0]
	if old.PromptTokens != 100 || old.CachedPromptTokens != 0 || old.CacheWriteTokens != 0 || old.ReasoningTokens != 0 ||
		!old.PriceFrom.IsZero() || !old.Cost.Equal(credits.AmountFromMinor(3, 1)) {
		t.Fatalf("old record after upgrade: %+v", old)
	}
	from := time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
	_, err = svc.Meter(ctx, usage.MeterParams{IdempotencyKey: "new", Record: usage.Record{AccountID: "acct_up", Model: "m",
		Endpoint: "/v1/chat/completions", StatusCode: 200, PromptTokens: 100, CompletionTokens: 10, CachedPromptTokens: 60,
		CacheWriteTokens: 20, ReasoningTokens: 5, PriceFrom: from, Cost: credits.AmountFromMinor(2, 1)}})
	if err != nil {
		t.Fatal(err)
	}
	for _, raw := range []bool{false, true} {
		for _, g := range [][]usage.GroupField{nil, {usage.GroupModel}} {
			rows, err := svc.Summary(ctx, usage.SummaryQuery{AccountID: "acct_up", From: "2026-03-01", To: "2026-03-01", GroupBy: g, Raw: raw})
			if err != nil || len(rows) != 1 {
				t.Fatalf("summary after upgrade: %+v %v", rows, err)
			}
			r := rows[0]
			if r.Requests != 2 || r.PromptTokens != 200 || r.CachedPromptTokens != 60 || r.CacheWriteTokens != 20 || r.ReasoningTokens != 5 ||
				!r.Cost.Equal(credits.AmountFromMinor(5, 1)) {
				t.Fatalf("summary raw=%v %v after upgrade: %+v", raw, g, r)
			}
		}
	}
	pg, err = svc.List(ctx, usage.ListQuery{AccountID: "acct_up", Model: "m", Limit: 10})
	if err != nil || len(pg.Records) != 2 {
		t.Fatalf("records after upgrade: %+v %v", pg, err)
	}
	if got := pg.Records; !got[0].PriceFrom.Equal(from) && !got[1].PriceFrom.Equal(from) {
		t.Fatalf("new record's price version lost: %+v", got)
	}
}

// SeedLedgerBeforeKeyLimits opens an account with an active hold and a
// key, as a database from before the per-key limits migration holds them.
// Run UpgradeKeyLimitsSQL on the database after closing st, reopen it and
// call CheckKeyLimitsAfterUpgrade.
func SeedLedgerBeforeKeyLimits(t *testing.T, st store.Store) {
	t.Helper()
	ctx := context.Background()
	led, _ := upgradeServices(t, st)
	if _, err := led.Open(ctx, "acct_kl", credits.Policy{TimeZone: "Asia/Kolkata"}); err != nil {
		t.Fatal(err)
	}
	if _, err := led.Purchase(ctx, credits.CreditParams{AccountID: "acct_kl", Amount: credits.AmountFromInt(10), IdempotencyKey: "fund"}); err != nil {
		t.Fatal(err)
	}
	if _, err := led.Reserve(ctx, credits.ReserveParams{AccountID: "acct_kl", Amount: credits.AmountFromInt(2), TTL: time.Hour, IdempotencyKey: "old-hold"}); err != nil {
		t.Fatal(err)
	}
	_ = led.Close(ctx)
}

// CheckKeyLimitsAfterUpgrade checks a database seeded by
// SeedLedgerBeforeKeyLimits and upgraded: the account reads without key
// limits, its old hold (no key) settles, and a key limit can be set and
// is enforced.
func CheckKeyLimitsAfterUpgrade(t *testing.T, st store.Store) {
	t.Helper()
	ctx := context.Background()
	led, _ := upgradeServices(t, st)
	a, err := led.Account(ctx, "acct_kl")
	if err != nil || len(a.Keys) != 0 || !a.Held.Equal(credits.AmountFromInt(2)) {
		t.Fatalf("account after upgrade: %+v %v", a, err)
	}
	h, err := led.Reserve(ctx, credits.ReserveParams{AccountID: "acct_kl", Amount: credits.AmountFromInt(2), TTL: time.Hour, IdempotencyKey: "old-hold"})
	if err != nil || h.KeyID != "" || h.KeyEpoch != 0 {
		t.Fatalf("old hold after upgrade: %+v %v", h, err)
	}
	if _, err := led.SetKeyLimit(ctx, "acct_kl", "key_1", credits.AmountFromInt(3), credits.PeriodDay); err != nil {
		t.Fatal(err)
	}
	if _, err := led.Settle(ctx, credits.SettleParams{HoldID: h.ID, Actual: credits.AmountFromInt(1)}); err != nil {
		t.Fatal(err)
	}
	_, err = led.Reserve(ctx, credits.ReserveParams{AccountID: "acct_kl", KeyID: "key_1", Amount: credits.AmountFromInt(4), TTL: time.Hour, IdempotencyKey: "new-hold"})
	if !errors.Is(err, credits.ErrKeyLimitExceeded) {
		t.Fatalf("key limit after upgrade: %v", err)
	}
	ks, ok, err := led.KeySpend(ctx, "acct_kl", "key_1")
	if err != nil || !ok || !ks.Remaining.Equal(credits.AmountFromInt(3)) {
		t.Fatalf("key spend after upgrade: %+v %v %v", ks, ok, err)
	}
}
