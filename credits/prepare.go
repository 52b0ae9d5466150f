package credits

import (
	"context"
	"time"
)

// Prepared spends let another domain (package usage) run a ledger spend
// inside its own backend transaction: the Service validates the request and
// fills in its IDs and fingerprint exactly as Debit, Settle and Release do,
// the caller's store applies it with ApplySpend in the same transaction as
// its own writes, and AfterSpend runs the post-commit work. No credits rule
// is duplicated outside this package.

// PrepareDebit validates p like Debit and returns the request Debit would
// apply. It returns ErrClosed, ErrUnknownAccount, ErrInvalidAmount,
// ErrAmountPrecision, ErrInvalidIdempotencyKey or ErrInvalidText.
//
// With process holds (see Reserve) the debit counts as pending until
// AfterSpend receives its commit or AbortSpend its failure (or for a
// minute), and the store checks it with this process's holds counted as
// held.
func (s *Service) PrepareDebit(p DebitParams) (SpendRequest, error) {
	if err := s.checkSpend(p.AccountID, p.Amount, p.IdempotencyKey, p.Reference, p.Description); err != nil {
		return SpendRequest{}, err
	}
	if p.Overrun > OverrunWriteOff {
		return SpendRequest{}, ErrInvalidOptions
	}
	r := SpendRequest{
		Kind: SpendDebit, Unit: s.opt.Unit.Code, AccountID: p.AccountID, Amount: p.Amount,
		Reference: p.Reference, Description: p.Description, IdempotencyKey: p.IdempotencyKey,
		Fingerprint: fingerprint('d', p.AccountID, "", p.Amount, int64(p.Overrun), time.Time{}, p.Reference, p.Description),
		EntryID:     s.ids.New(s.opt.EntryIDPrefix), Overrun: p.Overrun, KeyID: p.KeyID,
	}
	if s.local != nil {
		if err := s.pendLocal(&r); err != nil {
			return SpendRequest{}, err
		}
	}
	return r, nil
}

// PrepareSettle validates p like Settle and returns the request Settle
// would apply. It returns ErrClosed, ErrHoldNotFound, ErrInvalidAmount,
// ErrAmountPrecision or ErrInvalidText.
func (s *Service) PrepareSettle(p SettleParams) (SpendRequest, error) {
	if p.HoldID == "" || len(p.HoldID) > maxIDLen {
		return SpendRequest{}, ErrHoldNotFound
	}
	if s.closed.Load() {
		return SpendRequest{}, ErrClosed
	}
	if err := s.checkAmount(p.Actual, true); err != nil {
		return SpendRequest{}, err
	}
	if err := validText(p.Reference, p.Description); err != nil {
		return SpendRequest{}, err
	}
	ov := p.Overrun
	switch ov {
	case 0:
		ov = OverrunDebt
	case OverrunDebt, OverrunWriteOff:
	default:
		return SpendRequest{}, ErrInvalidOptions
	}
	r := SpendRequest{
		Kind: SpendSettle, Unit: s.opt.Unit.Code, HoldID: p.HoldID, Amount: p.Actual,
		Reference: p.Reference, Description: p.Description,
		Fingerprint: fingerprint('s', p.HoldID, "", p.Actual, int64(ov), time.Time{}, p.Reference, p.Description),
		EntryID:     s.ids.New(s.opt.EntryIDPrefix), Overrun: ov,
	}
	if s.local != nil {
		if _, err := s.settleLocal(&r); err != nil {
			return SpendRequest{}, err
		}
	}
	return r, nil
}

// PrepareRelease returns the request Release would apply. It returns
// ErrClosed or ErrHoldNotFound.
func (s *Service) PrepareRelease(holdID string) (SpendRequest, error) {
	if holdID == "" || len(holdID) > maxIDLen {
		return SpendRequest{}, ErrHoldNotFound
	}
	if s.closed.Load() {
		return SpendRequest{}, ErrClosed
	}
	if s.local != nil {
		ctx, cancel := context.WithTimeout(context.Background(), localWait)
		defer cancel()
		if _, ok, err := s.releaseLocal(ctx, holdID); ok {
			// Freed now; the caller's transaction has nothing to write.
			return SpendRequest{}, err
		}
	}
	return SpendRequest{Kind: SpendRelease, Unit: s.opt.Unit.Code, HoldID: holdID}, nil
}

// CheckSpendAmount reports whether amt may be debited or settled: zero or
// positive, in range and a multiple of the unit's SpendIncrement. It
// returns ErrInvalidAmount or ErrAmountPrecision.
func (s *Service) CheckSpendAmount(amt Amount) error { return s.checkAmount(amt, true) }

// AfterSpend runs the post-commit work of a prepared spend r whose
// caller's transaction committed, with res its result — or its refusal
// (res.Err), which wrote nothing: the auto-recharge of a debit or
// settlement that crossed the account's threshold, and with process
// holds the end of r's hold or pending debit. Call it once per such
// request, and AbortSpend for one that was not applied.
func (s *Service) AfterSpend(r SpendRequest, res SpendResult) {
	if s.local != nil && r.Kind != 0 {
		if res.Err != nil && systemFailure(res.Err) {
			// A store that isolates a request's own system failure reports
			// it here: whether it committed is not known.
			s.AbortSpend(r)
		} else {
			s.local.mu.Lock()
			s.outcomeLocal(&r, res, true)
			s.local.mu.Unlock()
		}
	}
	if res.Err == nil && res.Recharge != nil {
		s.startRecharge(res.Recharge)
	}
}
