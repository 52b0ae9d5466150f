package usage

import (
	"fmt"

	"github.com/keyledger/keyledger/credits"
	"github.com/shopspring/decimal"
)

// ModelPrice is a per-token price, quoted per million tokens as the seeds do.
type ModelPrice struct {
	Model                string          `json:"model"`
	PromptPerMillion     decimal.Decimal `json:"prompt_per_million"`
	CompletionPerMillion decimal.Decimal `json:"completion_per_million"`
}

// OperationPrice is a flat price per unit of an endpoint or operation:
// OpenRush charges 3 credits a tool call; email-verify 1 credit a
// verification, 0.5 for a cached one and nothing for a status check.
type OperationPrice struct {
	// Operation names what is priced; hosts usually use the endpoint
	// ("/v1/tools/inspect_domain") or an operation name ("verify").
	Operation string `json:"operation"`
	// PerUnit is charged per unit (per call when Units is zero).
	PerUnit decimal.Decimal `json:"per_unit"`
	// PerCachedUnit is charged per cached unit instead of PerUnit.
	PerCachedUnit decimal.Decimal `json:"per_cached_unit"`
}

// PriceBook maps models and operations to prices. It is immutable and safe
// for concurrent use. Costs are exact decimals: a per-token price of
// ₹0.27 per million tokens costs exactly ₹0.00000027 a token.
type PriceBook struct {
	models map[string]ModelPrice
	ops    map[string]OperationPrice
	// The same prices as ledger amounts, which price a record without
	// allocating.
	modelAmts map[string][2]credits.Amount // prompt, completion per million
	opAmts    map[string][2]credits.Amount // per unit, per cached unit
}

// NewPriceBook validates and returns a price book. Names must be unique and
// non-empty, prices must not be negative.
func NewPriceBook(models []ModelPrice, ops []OperationPrice) (*PriceBook, error) {
	pb := &PriceBook{models: make(map[string]ModelPrice, len(models)), ops: make(map[string]OperationPrice, len(ops)),
		modelAmts: make(map[string][2]credits.Amount, len(models)), opAmts: make(map[string][2]credits.Amount, len(ops))}
	for _, m := range models {
		if m.Model == "" || m.PromptPerMillion.IsNegative() || m.CompletionPerMillion.IsNegative() {
			return nil, fmt.Errorf("%w: model %q", ErrInvalidPrice, m.Model)
		}
		if _, dup := pb.models[m.Model]; dup {
			return nil, fmt.Errorf("%w: duplicate model %q", ErrInvalidPrice, m.Model)
		}
		pb.models[m.Model] = m
		pb.modelAmts[m.Model] = [2]credits.Amount{credits.NewAmount(m.PromptPerMillion), credits.NewAmount(m.CompletionPerMillion)}
	}
	for _, o := range ops {
		if o.Operation == "" || o.PerUnit.IsNegative() || o.PerCachedUnit.IsNegative() {
			return nil, fmt.Errorf("%w: operation %q", ErrInvalidPrice, o.Operation)
		}
		if _, dup := pb.ops[o.Operation]; dup {
			return nil, fmt.Errorf("%w: duplicate operation %q", ErrInvalidPrice, o.Operation)
		}
		pb.ops[o.Operation] = o
		pb.opAmts[o.Operation] = [2]credits.Amount{credits.NewAmount(o.PerUnit), credits.NewAmount(o.PerCachedUnit)}
	}
	return pb, nil
}

// Model returns the price of a model.
func (pb *PriceBook) Model(name string) (ModelPrice, bool) {
	m, ok := pb.models[name]
	return m, ok
}

// Operation returns the price of an operation.
func (pb *PriceBook) Operation(name string) (OperationPrice, bool) {
	o, ok := pb.ops[name]
	return o, ok
}

// Models returns every model price (in no particular order).
func (pb *PriceBook) Models() []ModelPrice {
	out := make([]ModelPrice, 0, len(pb.models))
	for _, m := range pb.models {
		out = append(out, m)
	}
	return out
}

// TokenCost is the exact cost of prompt and completion tokens of a model,
// or ErrUnknownModel.
func (pb *PriceBook) TokenCost(model string, prompt, completion int64) (credits.Amount, error) {
	m, ok := pb.modelAmts[model]
	if !ok {
		return credits.Amount{}, fmt.Errorf("%w: %q", ErrUnknownModel, model)
	}
	if prompt < 0 || completion < 0 {
		return credits.Amount{}, ErrInvalidRecord
	}
	// Shift(-6) divides by one million exactly: no rounding anywhere.
	return m[0].MulInt(prompt).Add(m[1].MulInt(completion)).Shift(-6), nil
}

// OperationCost is the exact cost of units (cached of them at the cached
// price) of an operation; units ≤ 0 count as one call. It returns
// ErrUnknownOperation for an operation not in the book.
func (pb *PriceBook) OperationCost(op string, units, cached int64) (credits.Amount, error) {
	o, ok := pb.opAmts[op]
	if !ok {
		return credits.Amount{}, fmt.Errorf("%w: %q", ErrUnknownOperation, op)
	}
	if units <= 0 {
		units = 1
	}
	if cached < 0 || cached > units {
		return credits.Amount{}, ErrInvalidRecord
	}
	return o[0].MulInt(units - cached).Add(o[1].MulInt(cached)), nil
}

// Cost prices a record: by model when it names one, else by its endpoint
// as an operation. Records that are not billable (Billable reports false)
// cost zero.
func (pb *PriceBook) Cost(r Record) (credits.Amount, error) {
	if !r.Billable() {
		return credits.Amount{}, nil
	}
	if r.Model != "" {
		return pb.TokenCost(r.Model, r.PromptTokens, r.CompletionTokens)
	}
	return pb.OperationCost(r.Endpoint, r.Units, r.CachedUnits)
}
