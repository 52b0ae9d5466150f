package main

import (
	"bytes"
	"encoding/json"
	"net/http"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/examples/gateway/internal/openai"
)

// maxSpendLimitINR bounds a key's spend limit (₹1 crore).
var maxSpendLimitINR = credits.AmountFromInt(10_000_000)

// spendLimitJSON is a key's spend_limit as the API shows it: the limit, and
// its use in the current period (amounts exact, at least 2 decimals, as
// strings; resets_at null for a lifetime limit).
type spendLimitJSON struct {
	AmountINR    string  `json:"amount_inr"`
	Period       string  `json:"period"`
	SpentINR     string  `json:"spent_this_period_inr"`
	RemainingINR string  `json:"remaining_inr"`
	ResetsAt     *string `json:"resets_at"`
}

func spendLimitView(ks credits.KeySpend) *spendLimitJSON {
	return &spendLimitJSON{
		AmountINR: inrText(ks.Limit), Period: string(ks.Period),
		// Open holds count as spent: they are what the key may be charged.
		SpentINR:     inrText(ks.Spent.Add(ks.Held)),
		RemainingINR: inrText(ks.Remaining), ResetsAt: optTime(ks.ResetsAt),
	}
}

func inrText(a credits.Amount) string { return openai.NewDecimal(a.Decimal()).String() }

// parseSpendLimit reads the spend_limit field of a key create or update:
// absent (given false), null (given, nil: no limit) or
// {"amount_inr": "5.00", "period": "day"|"week"|"month"|"lifetime"}.
// Its errors are 400s naming the field.
func parseSpendLimit(raw json.RawMessage) (given bool, l *keyledger.SpendLimit, err error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return false, nil, nil
	}
	if bytes.Equal(raw, []byte("null")) {
		return true, nil, nil
	}
	if raw[0] != '{' {
		return true, nil, badRequest(`spend_limit must be an object {"amount_inr": "5.00", "period": "day"} or null.`)
	}
	var in struct {
		AmountINR json.RawMessage `json:"amount_inr"`
		Period    *string         `json:"period"`
	}
	if err := unmarshalStrict(raw, &in, false); err != nil {
		return true, nil, badRequest("spend_limit: " + err.Error())
	}
	if len(in.AmountINR) == 0 || bytes.Equal(in.AmountINR, []byte("null")) {
		return true, nil, badRequest("spend_limit.amount_inr is required.")
	}
	var d openai.Decimal
	if err := d.UnmarshalJSON(in.AmountINR); err != nil {
		return true, nil, badRequest("spend_limit.amount_inr must be a positive amount in INR with at most 2 decimals.")
	}
	amt := credits.NewAmount(d.Decimal)
	if !amt.IsPositive() || !amt.MultipleOf(credits.AmountFromMinor(1, 2)) {
		return true, nil, badRequest("spend_limit.amount_inr must be a positive amount in INR with at most 2 decimals.")
	}
	if amt.Cmp(maxSpendLimitINR) > 0 {
		return true, nil, badRequest("spend_limit.amount_inr must be at most 10000000.00.")
	}
	if in.Period == nil || !credits.Period(*in.Period).Valid() {
		return true, nil, badRequest(`spend_limit.period must be "day", "week", "month" or "lifetime".`)
	}
	return true, &keyledger.SpendLimit{Amount: amt, Period: credits.Period(*in.Period)}, nil
}

// withSpend adds the key's spend limit, if it has one, to its view.
func (s *server) withSpend(r *http.Request, acct string, v keyJSON) (keyJSON, error) {
	ks, ok, err := s.kl.KeySpend(r.Context(), acct, v.ID)
	if err != nil {
		return v, err
	}
	if ok {
		v.SpendLimit = spendLimitView(ks)
	}
	return v, nil
}

// GET /v1/accounts/{id}/apiKeys/{key_id}
func (s *server) getKey(w http.ResponseWriter, r *http.Request, acct string) error {
	k, err := s.kl.Keys.Get(r.Context(), acct, r.PathValue("key_id"))
	if err != nil {
		return err
	}
	v, err := s.withSpend(r, acct, keyView(k, s.now()))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}
