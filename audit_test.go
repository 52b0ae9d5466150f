package keyledger_test

import (
	"cmp"
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/usage"
)

// audit is what auditAccount read of one account.
type audit struct {
	state   credits.Account
	entries []credits.Entry // ascending Seq
	records []usage.Record
	// charged is Σ usage record costs; debited Σ of the debit entries
	// that reference a usage record; other Σ of the other debit entries.
	charged, debited, other credits.Amount
}

// auditAccount reads an account straight from the store and checks the
// invariants the crash and fault tests rely on:
//
//   - the entries are Seq 1..n, each BalanceAfter is the running sum, and
//     the sum is the account's balance;
//   - Available = Balance − Held and never below −overdraft;
//   - every usage record with a cost has exactly one debit entry that
//     references it, for exactly that cost, and every debit entry that
//     references a record (recordPrefix) has its record;
//   - the daily rollups equal the sums over the raw records.
//
// The clock now should be past every hold's deadline when the caller also
// wants to check that no hold leaks (Held == 0).
func auditAccount(t testing.TB, st store.Store, accountID, recordPrefix string, now time.Time) audit {
	t.Helper()
	ctx := context.Background()
	var a audit
	s, err := st.LedgerAccount(ctx, accountID, now)
	if err != nil {
		t.Fatalf("audit %s: %v", accountID, err)
	}
	a.state = s

	// Entries, newest first, paged.
	var before int64
	for {
		page, err := st.LedgerEntries(ctx, accountID, credits.EntryFilter{}, before, 500)
		if err != nil {
			t.Fatalf("audit %s entries: %v", accountID, err)
		}
		a.entries = append(a.entries, page...)
		if len(page) < 500 {
			break
		}
		before = page[len(page)-1].Seq
	}
	slices.SortFunc(a.entries, func(x, y credits.Entry) int { return cmp.Compare(x.Seq, y.Seq) })
	var sum credits.Amount
	for i, e := range a.entries {
		if e.Seq != int64(i+1) {
			t.Fatalf("audit %s: entry %d has Seq %d (gap or duplicate)", accountID, i+1, e.Seq)
		}
		sum = sum.Add(e.Amount)
		if !e.BalanceAfter.Equal(sum) {
			t.Fatalf("audit %s: entry %d balance_after %s, running sum %s", accountID, e.Seq, e.BalanceAfter, sum)
		}
	}
	if !sum.Equal(a.state.Balance) {
		t.Fatalf("audit %s: Σ entries %s != balance %s", accountID, sum, a.state.Balance)
	}
	if !a.state.Available.Equal(a.state.Balance.Sub(a.state.Held)) {
		t.Fatalf("audit %s: available %s != balance %s − held %s", accountID, a.state.Available, a.state.Balance, a.state.Held)
	}
	if a.state.Available.Add(a.state.Policy.Overdraft).IsNegative() {
		t.Fatalf("audit %s: available %s below −overdraft %s", accountID, a.state.Available, a.state.Policy.Overdraft)
	}

	// Records and their charges.
	err = st.ScanUsage(ctx, usage.RecordQuery{AccountID: accountID}, func(r *usage.Record) error {
		a.records = append(a.records, r.Clone())
		return nil
	})
	if err != nil {
		t.Fatalf("audit %s records: %v", accountID, err)
	}
	byRef := map[string][]credits.Entry{}
	for _, e := range a.entries {
		if e.Type != credits.EntryDebit {
			continue
		}
		if strings.HasPrefix(e.Reference, recordPrefix) {
			byRef[e.Reference] = append(byRef[e.Reference], e)
			a.debited = a.debited.Add(e.Amount.Neg())
		} else {
			a.other = a.other.Add(e.Amount.Neg())
		}
	}
	ids := map[string]bool{}
	days := map[usage.Rollup]*usage.Rollup{}
	var lo, hi string
	for i := range a.records {
		r := &a.records[i]
		if ids[r.ID] {
			t.Fatalf("audit %s: record %s stored twice", accountID, r.ID)
		}
		ids[r.ID] = true
		a.charged = a.charged.Add(r.Cost)
		es := byRef[r.ID]
		switch {
		case r.Cost.IsPositive() && (len(es) != 1 || !es[0].Amount.Neg().Equal(r.Cost)):
			t.Fatalf("audit %s: record %s costs %s but has debit entries %+v", accountID, r.ID, r.Cost, es)
		case !r.Cost.IsPositive() && len(es) != 0:
			t.Fatalf("audit %s: free record %s has debit entries %+v", accountID, r.ID, es)
		}
		day := usage.Day(r.CreatedAt, time.UTC)
		k := r.Rollup("UTC", day)
		if days[k] == nil {
			v := k
			days[k] = &v
		}
		days[k].Add(r)
		if lo == "" || day < lo {
			lo = day
		}
		if day > hi {
			hi = day
		}
	}
	for ref := range byRef {
		if !ids[ref] {
			t.Fatalf("audit %s: debit entry for record %s, which does not exist", accountID, ref)
		}
	}
	if !a.charged.Equal(a.debited) {
		t.Fatalf("audit %s: records charged %s, ledger debited %s for them", accountID, a.charged, a.debited)
	}

	// Rollups against the records.
	if lo != "" {
		rows, _, err := st.UsageRollups(ctx, usage.RollupQuery{AccountID: accountID, TimeZone: "UTC", FromDay: lo, ToDay: hi})
		if err != nil {
			t.Fatalf("audit %s rollups: %v", accountID, err)
		}
		if len(rows) != len(days) {
			t.Fatalf("audit %s: %d rollup rows, records give %d", accountID, len(rows), len(days))
		}
		for _, row := range rows {
			k := row
			k.Requests, k.Errors, k.PromptTokens, k.CompletionTokens, k.Units, k.CachedUnits, k.Cost = 0, 0, 0, 0, 0, 0, credits.Amount{}
			want := days[k]
			if want == nil {
				t.Fatalf("audit %s: rollup row %+v has no records", accountID, row)
			}
			if row.Requests != want.Requests || row.Errors != want.Errors || row.PromptTokens != want.PromptTokens ||
				row.CompletionTokens != want.CompletionTokens || row.Units != want.Units || row.CachedUnits != want.CachedUnits ||
				!row.Cost.Equal(want.Cost) {
				t.Fatalf("audit %s: rollup %+v, records sum to %+v", accountID, row, *want)
			}
		}
	}
	return a
}
