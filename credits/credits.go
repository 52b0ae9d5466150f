// Package credits is keyledger's prepaid-credit ledger: exact, append-only,
// idempotent, safe under any concurrency, and in-process.
//
// # Model
//
// A ledger account is opened for an account ID with a Policy (overdraft,
// monthly cap, time zone, auto-recharge); credits does not import package
// account, so it can be used alone. Every change of balance is an Entry —
// grant, purchase, debit, refund, adjustment or expiry — carrying its signed
// amount and the balance after it, and the balance is always the sum of the
// entries: the backend writes both in one transaction.
//
// Money is Amount, an exact decimal (shopspring/decimal); there is no float
// anywhere. Amounts keep all their digits; only Unit.Format and Unit.Display
// round, half away from zero, to the unit's display decimals. JSON carries
// exact number literals (Amount: 0.0000125) or rounded display literals
// (Display: 50.00).
//
// # Rules
//
//   - Idempotency: every mutation that takes an IdempotencyKey records it
//     with a SHA-256 fingerprint of the request, scoped to the account. A
//     replay with the same request returns the first result and writes
//     nothing; the same key with a different request is
//     ErrIdempotencyConflict. Failed requests record nothing, so they may be
//     retried with the same key. Settle and Release are idempotent through
//     their hold: settling a hold again with the same actual amount returns
//     the first settlement, with another amount ErrHoldSettled.
//   - No overdraft unless the policy allows one: a debit or reserve that
//     would take Available below −Overdraft fails with ErrInsufficientFunds
//     and writes nothing, on every backend, under any concurrency. Only the
//     charge for delivered work may go further (see Overrun below).
//   - Grants may expire. Spending draws from expiring grants first, earliest
//     expiry first, then from credit that never expires. When a grant
//     expires, an expiry entry removes its unspent remainder, dated at the
//     grant's expiry. Expiry is lazy and also swept: the first write that
//     touches the account after the expiry materialises the entry (before
//     its own change), ExpireDue does it for every account, and reads in
//     between compute the same values without writing, so Balance and
//     BalanceAt are correct whether or not the entry exists yet.
//   - Holds: Reserve sets aside an estimate before work starts; Settle
//     charges the actual cost and frees the rest; Release frees it all; a
//     hold not resolved by its deadline expires and frees itself (reads
//     ignore it at once; the state is written lazily or by ExpireDue).
//     Available = Balance − Σ active holds. Extend raises an active hold
//     (checked like a reserve of the difference) and moves its deadline,
//     so that long work keeps its funds.
//   - Delivered work is charged in full. Settling above the hold charges
//     the whole actual cost (OverrunDebt, the default): what funds do not
//     cover takes the balance below −Overdraft, a debt that refuses every
//     further debit and reserve with *DebtError until a credit pays it.
//     Debt arises only when work delivered more than was reserved (an
//     upstream ignoring its limit, a race at a stream's cut-off), so it is
//     bounded by the overshoot of the work in flight. A host may choose
//     OverrunWriteOff instead: charge what funds and the cap allow and
//     report the rest as Shortfall. A debit is refused when funds do not
//     cover it unless it says it is for delivered work (DebitParams.Overrun).
//     A grant expiring while holds are active can leave Available below
//     −Overdraft.
//   - Monthly cap: spend (debits and settlements) per calendar month in the
//     policy's time zone; a debit or reserve that would take spend plus
//     active holds past the cap fails with ErrMonthlyLimit.
//   - Auto-recharge: when a debit or settlement takes the balance below the
//     threshold, the host's Recharger is called once for that crossing —
//     asynchronously, never blocking the debit, and also when the debit's
//     caller stopped waiting before it committed — and its payment is written
//     as a purchase under its own idempotency key. The crossing is recorded
//     in the store, so a restart does not repeat it; the next crossing
//     needs the balance to reach the threshold again. Failures are logged,
//     counted and passed to Options.OnRechargeError, never retried in a loop.
//     A recharge is at most once per crossing: if the process stops between
//     the debit and the Recharger call, that crossing buys nothing.
//   - Spend is debits and settlements: refunds do not lower UsedThisMonth,
//     and negative adjustments (operator corrections) are neither spend nor
//     a recharge trigger, though they respect the overdraft.
//   - Idempotency records are kept as long as the ledger (there is no
//     expiry of keys), so a key may never be reused for another request.
//   - Each account records the Unit code of the Service that opened it; a
//     Service of another unit gets ErrUnitMismatch.
//
// # Backends, the ledger engine and group commit
//
// The Store interface below is implemented by store/memstore,
// store/sqlitestore and store/pgstore. The ledger rules themselves live in
// the driver package credits/ledger (ApplySpend, ApplyCredit and
// AccountState, whose methods hold every rule), run by every backend inside
// its transaction, so all backends agree; hosts never import it (the
// archtest guards that) and read Account instead. A store whose commits are
// expensive has a GroupCommit method (see Store); the Service then
// coalesces concurrent Debit, Reserve, Settle and Release calls into one
// ApplySpends call per transaction, and each caller still gets its own
// all-or-nothing result.
//
// Holds, balances and idempotency records live in the store, so processes
// sharing a backend share them. The SQLite store serialises writers with
// BEGIN IMMEDIATE and updates an account row only at the version it read;
// a PostgreSQL store does the same with SELECT … FOR UPDATE on the account
// row (or a version-checked UPDATE) in the transaction that runs the
// rules, and an insert-if-absent on the idempotency table.
package credits

import (
	"errors"
	"time"

	"github.com/keyledger/keyledger/errkind"
)

// Errors returned by Service and by Store implementations. Match them with
// errors.Is.
var (
	ErrUnknownAccount    = errkind.New(errkind.NotFound, "credits: unknown ledger account")
	ErrAlreadyOpen       = errkind.New(errkind.Conflict, "credits: ledger account already open")
	ErrInvalidAccountID  = errkind.New(errkind.Invalid, "credits: account ID must be 1-128 bytes of printable UTF-8")
	ErrInvalidAmount     = errkind.New(errkind.Invalid, "credits: invalid amount")
	ErrAmountPrecision   = errkind.New(errkind.Invalid, "credits: amount is not a multiple of the unit's increment")
	ErrInsufficientFunds = errkind.New(errkind.PaymentRequired, "credits: insufficient funds")
	// ErrInDebt is matched (with ErrInsufficientFunds) by the *DebtError a
	// spend of an account in debt returns.
	ErrInDebt                = errkind.New(errkind.PaymentRequired, "credits: account in debt")
	ErrMonthlyLimit          = errkind.New(errkind.PaymentRequired, "credits: monthly spend limit reached")
	ErrIdempotencyConflict   = errkind.New(errkind.Conflict, "credits: idempotency key reused with a different request")
	ErrInvalidIdempotencyKey = errkind.New(errkind.Invalid, "credits: idempotency key must be 1-255 bytes of UTF-8")
	ErrInvalidText           = errkind.New(errkind.Invalid, "credits: reference (≤255 bytes) or description (≤1024 bytes) too long or not UTF-8")
	ErrInvalidExpiry         = errkind.New(errkind.Invalid, "credits: grant expiry must be in the future and before 2200")
	ErrInvalidTTL            = errkind.New(errkind.Invalid, "credits: hold TTL must be positive and at most the maximum")
	ErrInvalidPolicy         = errkind.New(errkind.Invalid, "credits: invalid policy")
	ErrInvalidUnit           = errkind.New(errkind.Invalid, "credits: invalid unit")
	ErrUnitMismatch          = errkind.New(errkind.Conflict, "credits: account is kept in another unit")
	ErrHoldNotFound          = errkind.New(errkind.NotFound, "credits: hold not found")
	ErrHoldSettled           = errkind.New(errkind.Conflict, "credits: hold already settled")
	ErrHoldReleased          = errkind.New(errkind.Conflict, "credits: hold already released")
	ErrHoldExpired           = errkind.New(errkind.Conflict, "credits: hold expired")
	ErrInvalidCursor         = errkind.New(errkind.Invalid, "credits: invalid cursor")
	ErrInvalidOptions        = errkind.New(errkind.Invalid, "credits: invalid options")
	ErrClosed                = errkind.New(errkind.Internal, "credits: service closed")
	// ErrKeyBudgetExceeded is matched by the *KeyBudgetError of a request
	// larger than what remains of its key's spend limit this period.
	ErrKeyBudgetExceeded = errkind.New(errkind.PaymentRequired, "credits: key spend limit reached for this period")
	// ErrKeyLimitExceeded is matched by the *KeyBudgetError of a request
	// larger than its key's whole period limit.
	ErrKeyLimitExceeded = errkind.New(errkind.Invalid, "credits: request exceeds the key's spend limit")
	ErrInvalidKeyLimit  = errkind.New(errkind.Invalid, "credits: key spend limit needs a key ID, a positive amount and a period of day, week, month or lifetime")
	// ErrTooManyKeyLimits refuses a spend limit for a 101st key of one
	// account: remove the limit of a key that no longer needs one.
	ErrTooManyKeyLimits = errkind.New(errkind.Invalid, "credits: an account has at most 100 keys with a spend limit")
)

// DebtError refuses a debit or reserve of an account whose balance is
// below −Overdraft: delivered work cost more than its hold and the funds
// (see Overrun). errors.Is matches ErrInsufficientFunds and ErrInDebt. A
// credit pays the debt first; spending resumes once Available covers it.
type DebtError struct {
	// Debt is how far the balance is below −Overdraft (positive).
	Debt Amount
	// Unit is the unit code of the account.
	Unit string
}

func (e *DebtError) Error() string {
	return "credits: insufficient funds: the account owes " + e.Debt.String() + " " + e.Unit
}

// Is makes errors.Is(err, ErrInsufficientFunds) and errors.Is(err,
// ErrInDebt) true.
func (e *DebtError) Is(target error) bool {
	return target == ErrInsufficientFunds || target == ErrInDebt
}

// Kind is errkind.PaymentRequired.
func (e *DebtError) Kind() errkind.Kind { return errkind.PaymentRequired }

// Overrun says what a charge for work already delivered does with the
// part of its cost that Available (with the overdraft) or the monthly cap
// cannot cover.
type Overrun uint8

// Overrun policies.
const (
	// OverrunDebt charges the whole cost: the balance may go below
	// −Overdraft, by at most the overshoot of the work in flight, and the
	// account is refused further spending (*DebtError) until a credit pays
	// the debt. The default of Settle and of the keyledger facade.
	OverrunDebt Overrun = iota + 1
	// OverrunWriteOff charges what funds and the cap allow and reports the
	// rest as a shortfall that is never collected.
	OverrunWriteOff
)

// isDomainError reports whether err is an expected outcome of a request
// (one of the sentinels above) rather than a system failure.
func isDomainError(err error) bool {
	for _, e := range []error{
		ErrUnknownAccount, ErrInsufficientFunds, ErrMonthlyLimit, ErrIdempotencyConflict,
		ErrHoldNotFound, ErrHoldSettled, ErrHoldReleased, ErrHoldExpired, ErrAlreadyOpen, ErrUnitMismatch,
		ErrInvalidTTL, ErrKeyBudgetExceeded, ErrKeyLimitExceeded,
	} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// EntryType is the kind of a ledger entry.
type EntryType string

// Entry types. Grants, purchases and refunds add credit; debits and expiries
// remove it; adjustments go either way.
const (
	EntryGrant      EntryType = "grant"
	EntryPurchase   EntryType = "purchase"
	EntryDebit      EntryType = "debit"
	EntryRefund     EntryType = "refund"
	EntryAdjustment EntryType = "adjustment"
	EntryExpiry     EntryType = "expiry"
)

// Valid reports whether t is one of the defined types.
func (t EntryType) Valid() bool {
	switch t {
	case EntryGrant, EntryPurchase, EntryDebit, EntryRefund, EntryAdjustment, EntryExpiry:
		return true
	}
	return false
}

// Entry is one immutable line of an account's ledger.
type Entry struct {
	ID        string    `json:"id"` // "txn_…" (configurable); expiries "exp_…"
	AccountID string    `json:"account_id"`
	Seq       int64     `json:"seq"` // 1, 2, 3… per account: ledger order
	Type      EntryType `json:"type"`
	// Amount is signed: positive adds to the balance, negative removes.
	Amount       Amount `json:"amount"`
	BalanceAfter Amount `json:"balance_after"`
	// Reference links the entry to the host's world: a usage ID, payment ID
	// or order ID; for expiries, the expired grant's entry ID.
	Reference      string `json:"reference,omitempty"`
	Description    string `json:"description,omitempty"`
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	// HoldID is the settled hold of a settlement's debit.
	HoldID string `json:"hold_id,omitempty"`
	// ExpiresAt is set on grants that expire.
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	CreatedAt time.Time `json:"created_at"`
}

// HoldState is the lifecycle state of a hold.
type HoldState string

// Hold states. Only active holds count against Available.
const (
	HoldActive   HoldState = "active"
	HoldSettled  HoldState = "settled"
	HoldReleased HoldState = "released"
	HoldExpired  HoldState = "expired"
)

// Hold is funds set aside by Reserve until Settle, Release or its deadline.
type Hold struct {
	ID             string    `json:"id"` // "hold_…" (configurable)
	AccountID      string    `json:"account_id"`
	Amount         Amount    `json:"amount"`
	State          HoldState `json:"state"`
	Reference      string    `json:"reference,omitempty"`
	IdempotencyKey string    `json:"idempotency_key"`
	CreatedAt      time.Time `json:"created_at"`
	ExpiresAt      time.Time `json:"expires_at"`
	// ResolvedAt is when the hold was settled, released or expired (its
	// deadline); zero while active.
	ResolvedAt time.Time `json:"resolved_at,omitzero"`
	// Actual and Charged are set by Settle: the cost asked for and the part
	// of it that was charged; Actual − Charged is the shortfall.
	Actual  Amount `json:"actual"`
	Charged Amount `json:"charged"`
	// EntryID and EntrySeq name the settlement's debit entry ("" and 0 when
	// the settlement charged nothing).
	EntryID  string `json:"entry_id,omitempty"`
	EntrySeq int64  `json:"-"`
	// SettleFingerprint identifies the Settle request, for replays.
	SettleFingerprint [32]byte `json:"-"`
	// KeyID is the API key the hold was reserved for ("" if none).
	KeyID string `json:"key_id,omitempty"`
	// KeyEpoch names the key-limit period whose counters include the hold
	// (0: none do); the ledger engine sets it.
	KeyEpoch int64 `json:"-"`
}

// Shortfall is the part of a settlement's actual cost that was not charged.
func (h Hold) Shortfall() Amount { return h.Actual.Sub(h.Charged) }

// at returns h as seen at now: an active hold past its deadline is expired.
func (h Hold) at(now time.Time) Hold {
	if h.State == HoldActive && !now.Before(h.ExpiresAt) {
		h.State, h.ResolvedAt = HoldExpired, h.ExpiresAt
	}
	return h
}

// AutoRecharge configures automatic top-ups of one account.
type AutoRecharge struct {
	Enabled bool `json:"enabled"`
	// Threshold: a debit that takes the balance below it triggers a recharge.
	Threshold Amount `json:"threshold"`
	// Amount is what each recharge buys.
	Amount Amount `json:"amount"`
}

// Policy is the spending policy of one ledger account. The keyledger facade
// derives it from the account's plan (and per-account overrides).
type Policy struct {
	// Overdraft is how far below zero Available may go (≥ 0; 0 = none).
	Overdraft Amount `json:"overdraft"`
	// MonthlyCap bounds spend per calendar month (0 = no cap).
	MonthlyCap Amount `json:"monthly_cap"`
	// TimeZone is the IANA zone whose calendar months the cap counts
	// ("UTC" if empty).
	TimeZone     string       `json:"time_zone"`
	AutoRecharge AutoRecharge `json:"auto_recharge"`
}

// Account is a ledger account as of one moment.
type Account struct {
	ID     string `json:"id"`
	Unit   string `json:"unit"`
	Policy Policy `json:"policy"`
	// Balance is the sum of all entries, expiries due by now included.
	Balance Amount `json:"balance"`
	// Held is the sum of active, unexpired holds.
	Held Amount `json:"held"`
	// Available is Balance − Held; spending may take it down to −Overdraft.
	Available Amount `json:"available"`
	// Debt is how far Balance is below −Overdraft: delivered work that
	// cost more than its hold and the funds (OverrunDebt). Zero normally.
	Debt Amount `json:"debt"`
	// UsedThisMonth is spend in the current calendar month of the policy's
	// time zone, which ends at MonthEnds.
	UsedThisMonth Amount    `json:"used_this_month"`
	MonthEnds     time.Time `json:"month_ends"`
	// NextExpiry is when the earliest-expiring grant with credit left
	// expires (zero if none does).
	NextExpiry time.Time `json:"next_expiry,omitzero"`
	// Keys are the spend limits of the account's keys that have one, by
	// key ID, with their use in the current period.
	Keys []KeySpend `json:"keys,omitempty"`
	// Seq is the sequence number of the account's last entry.
	Seq       int64     `json:"seq"`
	OpenedAt  time.Time `json:"opened_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// CanSpend reports whether amt more may be debited or held now: the ledger's
// one funds rule. Available less amt may not fall below −Overdraft
// (ErrInsufficientFunds, or a *DebtError naming an account's debt), and
// spend plus holds may not pass the monthly cap (ErrMonthlyLimit).
func (a *Account) CanSpend(amt Amount) error {
	room := a.Balance
	if !a.Held.IsZero() {
		room = room.Sub(a.Held)
	}
	if od := a.Policy.Overdraft; !od.IsZero() {
		room = room.Add(od)
	}
	if room.Cmp(amt) < 0 {
		if d := a.debt(); d.IsPositive() {
			return &DebtError{Debt: d, Unit: a.Unit}
		}
		return ErrInsufficientFunds
	}
	if c := a.Policy.MonthlyCap; c.IsPositive() && c.Sub(a.UsedThisMonth).Sub(a.Held).Cmp(amt) < 0 {
		return ErrMonthlyLimit
	}
	return nil
}

// debt is how far the balance is below −Overdraft (zero if it is not).
func (a *Account) debt() Amount {
	d := a.Balance.Add(a.Policy.Overdraft)
	if !d.IsNegative() {
		return Amount{}
	}
	return d.Neg()
}

// Settlement is the result of Settle.
type Settlement struct {
	Hold Hold `json:"hold"`
	// Entry is the debit written; zero (ID "") when nothing was charged.
	Entry Entry `json:"entry"`
	// Charged is what the settlement took from the balance.
	Charged Amount `json:"charged"`
	// Shortfall is the part of the actual cost above the hold that the
	// balance (with overdraft) or the monthly cap could not cover.
	Shortfall Amount `json:"shortfall"`
}
