package usage

import (
	"fmt"

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
}

// NewPriceBook validates and returns a price book. Names must be unique and
// non-empty, prices must not be negative.
func NewPriceBook(models []ModelPrice, ops []OperationPrice) (*PriceBook, error) {
	pb := &PriceBook{models: make(map[string]ModelPrice, len(models)), ops: make(map[string]OperationPrice, len(ops))}
	for _, m := range models {
		if m.Model == "" || m.PromptPerMillion.IsNegative() || m.CompletionPerMillion.IsNegative() {
			return nil, fmt.Errorf("%w: model %q", ErrInvalidPrice, m.Model)
		}
		if _, dup := pb.models[m.Model]; dup {
			return nil, fmt.Errorf("%w: duplicate model %q", ErrInvalidPrice, m.Model)
		}
		pb.models[m.Model] = m
	}
	for _, o := range ops {
		if o.Operation == "" || o.PerUnit.IsNegative() || o.PerCachedUnit.IsNegative() {
			return nil, fmt.Errorf("%w: operation %q", ErrInvalidPrice, o.Operation)
		}
		if _, dup := pb.ops[o.Operation]; dup {
			return nil, fmt.Errorf("%w: duplicate operation %q", ErrInvalidPrice, o.Operation)
		}
		pb.ops[o.Operation] = o
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
func (pb *PriceBook) TokenCost(model string, prompt, completion int64) (decimal.Decimal, error) {
	m, ok := pb.models[model]
	if !ok {
		return decimal.Decimal{}, fmt.Errorf("%w: %q", ErrUnknownModel, model)
	}
	if prompt < 0 || completion < 0 {
		return decimal.Decimal{}, ErrInvalidRecord
	}
	// Shift(-6) divides by one million exactly: no rounding anywhere.
	p := m.PromptPerMillion.Mul(decimal.NewFromInt(prompt))
	c := m.CompletionPerMillion.Mul(decimal.NewFromInt(completion))
	return p.Add(c).Shift(-6), nil
}

// OperationCost is the exact cost of units (cached of them at the cached
// price) of an operation; units ≤ 0 count as one call. It returns
// ErrUnknownOperation for an operation not in the book.
func (pb *PriceBook) OperationCost(op string, units, cached int64) (decimal.Decimal, error) {
	o, ok := pb.ops[op]
	if !ok {
		return decimal.Decimal{}, fmt.Errorf("%w: %q", ErrUnknownOperation, op)
	}
	if units <= 0 {
		units = 1
	}
	if cached < 0 || cached > units {
		return decimal.Decimal{}, ErrInvalidRecord
	}
	full := o.PerUnit.Mul(decimal.NewFromInt(units - cached))
	return full.Add(o.PerCachedUnit.Mul(decimal.NewFromInt(cached))), nil
}

// Cost prices a record: by model when it names one, else by its endpoint
// as an operation. Records that are not billable (Billable reports false)
// cost zero.
func (pb *PriceBook) Cost(r Record) (decimal.Decimal, error) {
	if !r.Billable() {
		return decimal.Zero, nil
	}
	if r.Model != "" {
		return pb.TokenCost(r.Model, r.PromptTokens, r.CompletionTokens)
	}
	return pb.OperationCost(r.Endpoint, r.Units, r.CachedUnits)
}
