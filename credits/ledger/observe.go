package ledger

import (
	"context"

	"github.com/keyledger/keyledger/credits"
)

// Movement is what one applied request did to an account's money: the
// balance and the cap month's spend before and after it, and the entry it
// wrote. Backends that keep an event outbox turn movements into events
// (a low-balance or cap-percentage crossing, a payment credited) written
// in the same transaction.
type Movement struct {
	// State is the account after the request (the live state: read it,
	// do not keep it past the call).
	State *AccountState
	// BalanceBefore and SpentBefore are Balance and MonthSpent before it.
	BalanceBefore, SpentBefore credits.Amount
	// KeyID is the API key a debit or settlement charged ("" for none),
	// and KeySpentBefore what that key had spent in its current period
	// before it (zero when the key has no limit).
	KeyID          string
	KeySpentBefore credits.Amount
	// Entry is the entry the request wrote.
	Entry credits.Entry
}

// Observer is an optional capability of a Tx: ApplySpend and ApplyCredit
// call Moved after every request that wrote a ledger entry (a debit, a
// settle that charged, a credit), inside the transaction. An error is a
// system failure: the caller rolls back. A request that is rolled back
// (a later failure of the same batch's request) is rolled back with what
// Moved staged, so a Tx drops what it staged for it with the rest.
type Observer interface {
	Moved(ctx context.Context, m Movement) error
}

// snapshot is what a Movement reports as before the request.
type snapshot struct {
	bal, spent, keySpent credits.Amount
	keyID                string
}

// before records st ahead of a movement charged to keyID ("" for none).
func (st *AccountState) before(keyID string) snapshot {
	s := snapshot{bal: st.Balance, spent: st.MonthSpent, keyID: keyID}
	if k := st.key(keyID); k != nil {
		s.keySpent = k.Spent
	}
	return s
}

// observe reports a movement to tx if it observes them.
func observe(ctx context.Context, tx Tx, st *AccountState, b snapshot, e credits.Entry) error {
	o, ok := tx.(Observer)
	if !ok || e.ID == "" {
		return nil
	}
	return o.Moved(ctx, Movement{State: st, BalanceBefore: b.bal, SpentBefore: b.spent, KeyID: b.keyID, KeySpentBefore: b.keySpent, Entry: e})
}
