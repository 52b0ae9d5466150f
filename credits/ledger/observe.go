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

// observe reports a movement to tx if it observes them.
func observe(ctx context.Context, tx Tx, st *AccountState, bal, spent credits.Amount, e credits.Entry) error {
	o, ok := tx.(Observer)
	if !ok || e.ID == "" {
		return nil
	}
	return o.Moved(ctx, Movement{State: st, BalanceBefore: bal, SpentBefore: spent, Entry: e})
}
