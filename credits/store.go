package credits

import (
	"context"
	"time"
)

// SpendKind selects what a SpendRequest does.
type SpendKind uint8

// Spend kinds: the operations that draw on Available or a hold. They are
// the ones a Service may group-commit.
const (
	SpendDebit SpendKind = iota + 1
	SpendReserve
	SpendSettle
	SpendRelease
	// SpendExtend raises an active hold to Amount (if more) and moves its
	// deadline to now + TTL (if later).
	SpendExtend
)

// SpendRequest is one validated Debit, Reserve, Settle or Release. The
// Service fills in the IDs a request may create, so that a store never
// invents identifiers.
type SpendRequest struct {
	Kind SpendKind
	// Unit is the Service's unit code; a request for an account kept in
	// another unit fails with ErrUnitMismatch.
	Unit string
	// AccountID is the account of a debit or reserve; settles and releases
	// find it through their hold.
	AccountID string
	// HoldID is the new hold's ID (reserve) or the hold to resolve (settle,
	// release).
	HoldID string
	// Amount is the debit, the reserved amount, or the settle's actual cost.
	Amount Amount
	// KeyID is the API key a debit or reserve spends for: its spend limit,
	// if it has one, is checked and counted (see SetKeyLimit).
	KeyID string
	// KeyHeldOthers is, with process holds, what the process holds for
	// KeyID besides this request: the key-limit check counts it.
	KeyHeldOthers Amount
	// TTL is how long a reserved hold lives.
	TTL                    time.Duration
	Reference, Description string
	// IdempotencyKey scopes debits and reserves; settles and releases are
	// idempotent through their hold.
	IdempotencyKey string
	// Fingerprint is the SHA-256 of the request's canonical fields; a
	// store keeps it with the idempotency key to tell a replay from a
	// conflicting reuse.
	Fingerprint [32]byte
	// EntryID is the ID of the debit entry a debit or settle may write.
	EntryID string
	// Overrun is what a debit or settle does with the part of Amount that
	// funds or the monthly cap cannot cover. A settle treats zero as
	// OverrunDebt; a debit treats zero as a refusal (ErrInsufficientFunds,
	// ErrMonthlyLimit).
	Overrun Overrun
	// Held is set on the settle of a process hold (see ProcessHolds on
	// Service): the active hold, which the store has never seen. The
	// settle writes it, settled, with its charge; the account's stored Held
	// never included it. A replay finds the settled hold in the store.
	Held *Hold
	// HeldOthers is what the process holds on the account besides Held
	// (its other process holds and pending debits): the checks and a
	// write-off count it as held, so that a charge never takes funds set
	// aside for other requests of the process. On the settle of a hold
	// drawn from a lease it is negative: the lease's spare room the
	// instance lends the charge above Held, which the lease then also pays.
	HeldOthers Amount
	// Lease is, with Held, the ID of the lease Held was drawn from: a
	// stored hold of this instance on Held's account and key (see
	// pgstore.Options.LeasedHolds). The settle takes the part of the charge up
	// to Held's amount out of the lease, so Held is never added to the
	// account's held funds; if the lease cannot cover it the settle
	// charges Held as a process hold and sets SpendResult.LeaseLost. On a
	// reserve or an extend, Lease (equal to HoldID) says the hold is a
	// lease: only funds that outlive it fund it (grants that expire before
	// its deadline count as held), its deadline ends at its key's limit
	// period end and never moves earlier, and an extend's Amount is the
	// raise of the lease rather than its new total.
	Lease string
	// ReserveFingerprint is, with Held, the fingerprint of the reserve
	// that made the hold: the settle stores the reserve's idempotency
	// record, so that its key keeps meeting the keys of other writes.
	ReserveFingerprint [32]byte
}

// SpendResult is the outcome of one SpendRequest.
type SpendResult struct {
	Entry Entry // debit; settle when it charged something
	Hold  Hold  // reserve, settle, release
	// Recharge is set when this debit or settlement crossed the account's
	// auto-recharge threshold; the Service acts on it after commit.
	Recharge *RechargeRequest
	// LeaseLost reports that a settle's lease (SpendRequest.Lease) could
	// not cover its hold: the instance must draw no more holds from it.
	LeaseLost bool
	// Err is the request's expected failure (a sentinel of this package);
	// nil on success.
	Err error
}

// CreditRequest is one validated grant, purchase, refund or adjustment.
type CreditRequest struct {
	Unit      string // as in SpendRequest
	AccountID string
	Type      EntryType // EntryGrant, EntryPurchase, EntryRefund or EntryAdjustment
	// Amount is positive, except that an adjustment may be negative.
	Amount Amount
	// ExpiresAt makes a grant expire; zero for credit that never expires.
	ExpiresAt              time.Time
	Reference, Description string
	IdempotencyKey         string
	Fingerprint            [32]byte // as in SpendRequest
	EntryID                string
	// HeldOthers is what the Service's process holds (see
	// SpendRequest.HeldOthers) set aside on the account: a negative
	// adjustment may not take it.
	HeldOthers Amount
}

// Store is what the credits Service needs from a backend. Implementations
// are safe for concurrent use, receive values the Service has already
// validated, and run the ledger rules with the engine of
// credits/ledger (ledger.ApplySpend, ledger.ApplyCredit,
// ledger.AccountState) inside their transactions.
//
// A store whose commit is expensive (a durable database) may also have a
// method GroupCommit() bool that returns true; the Service then coalesces
// concurrent spends into one ApplySpends call per transaction (group
// commit). In-memory stores do without it and receive one request per call.
type Store interface {
	// OpenLedger opens the account id in unit with policy p at now
	// (ledger.NewAccountState) and returns it, or ErrAlreadyOpen. Of
	// concurrent opens of one ID exactly one succeeds.
	OpenLedger(ctx context.Context, id, unit string, p Policy, now time.Time) (Account, error)
	// SetLedgerPolicy replaces an account's policy (AccountState.SetPolicy,
	// after Advance to now) and returns the account, or ErrUnknownAccount.
	SetLedgerPolicy(ctx context.Context, accountID string, p Policy, now time.Time) (Account, error)
	// LedgerAccount returns the account as of now — Advance applied in
	// memory, nothing written — or ErrUnknownAccount.
	LedgerAccount(ctx context.Context, accountID string, now time.Time) (Account, error)

	// LedgerCredit applies one credit with ledger.ApplyCredit in one
	// transaction. Expected failures (those of ApplyCredit) are returned as
	// they are, with nothing written.
	LedgerCredit(ctx context.Context, now time.Time, r CreditRequest) (Entry, error)
	// LedgerEntries returns up to limit entries of the account matching f
	// with Seq < beforeSeq (0: from the newest) in descending Seq order, or
	// ErrUnknownAccount.
	LedgerEntries(ctx context.Context, accountID string, f EntryFilter, beforeSeq int64, limit int) ([]Entry, error)
	// LedgerBalanceAt returns the balance at time t, read in one snapshot:
	// the BalanceAfter of the last entry created at or before t (0 if none)
	// minus the remainders of grant lots that expired at or before t but
	// whose expiry entry is not written yet. It returns ErrUnknownAccount.
	LedgerBalanceAt(ctx context.Context, accountID string, t time.Time) (Amount, error)

	// ApplySpends applies reqs in order with ledger.ApplySpend and stores
	// each outcome in res[i] (len(res) == len(reqs)). Each request is
	// all-or-nothing on its own: an expected failure (ErrInsufficientFunds,
	// ErrMonthlyLimit, ErrIdempotencyConflict, ErrUnknownAccount,
	// ErrUnitMismatch, ErrHoldNotFound, ErrHoldSettled, ErrHoldReleased,
	// ErrHoldExpired) goes to res[i].Err, writes nothing for that request
	// and does not affect the others. A non-nil error means a system failure
	// for which no request of the call was applied. A store that isolates a
	// request's own system failure (by retrying the others) reports it in
	// that request's res[i].Err instead.
	ApplySpends(ctx context.Context, now time.Time, reqs []SpendRequest, res []SpendResult) error
	// LedgerHold returns the hold as stored (an active hold past its
	// deadline may still read active), or ErrHoldNotFound.
	LedgerHold(ctx context.Context, holdID string) (Hold, error)
	// ExpireLedgers materialises due expiries (AccountState.Advance at now,
	// persisted) of the account accountID, or of up to limit accounts with
	// anything due if accountID is "". It returns how many accounts it
	// changed, expiry entries it wrote and holds it expired; fewer than
	// limit accounts means nothing else is due at now. An account with
	// nothing due is left untouched (and costs no write transaction).
	ExpireLedgers(ctx context.Context, now time.Time, accountID string, limit int) (ExpiryReport, error)
	// SetKeyLimit sets (a positive limit and a valid p) or removes (p == "")
	// the spend limit of the key keyID on the account at now
	// (ledger.AccountState.SetKeyLimit, after Advance, persisted) and
	// returns the key's spend (zero when removed), or ErrUnknownAccount.
	SetKeyLimit(ctx context.Context, accountID, keyID string, limit Amount, p Period, now time.Time) (KeySpend, error)
}

// ExpiryReport counts what one expiry sweep did.
type ExpiryReport struct {
	Accounts int // accounts touched
	Entries  int // expiry entries written
	Holds    int // holds marked expired
}
