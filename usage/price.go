package usage

import (
	"fmt"
	"slices"
	"time"

	"github.com/keyledger/keyledger/credits"
	"github.com/shopspring/decimal"
)

// ModelPrice is one version of a model's per-token price, quoted per
// million tokens as the seeds do.
//
// The token counts it prices are those of a Record: CachedPromptTokens
// (cache reads) and CacheWriteTokens are parts of PromptTokens, and
// ReasoningTokens a part of CompletionTokens, so no token is charged twice.
// The plain prompt price pays the prompt tokens that are neither, the plain
// completion price the completion tokens that are not reasoning. An unset
// (nil) cached, cache-write or reasoning price bills those tokens at the
// plain prompt or completion price, so a price with only the two plain
// prices charges exactly what it did before the others existed.
type ModelPrice struct {
	Model string `json:"model"`
	// EffectiveFrom is when this version comes into force; it stays in
	// force until the model's next version. Zero: since always. A model may
	// have several versions with distinct times.
	EffectiveFrom        time.Time       `json:"effective_from,omitzero"`
	PromptPerMillion     decimal.Decimal `json:"prompt_per_million"`
	CompletionPerMillion decimal.Decimal `json:"completion_per_million"`
	// CachedPromptPerMillion prices cache reads (OpenAI's
	// prompt_tokens_details.cached_tokens, Anthropic's
	// cache_read_input_tokens).
	CachedPromptPerMillion *decimal.Decimal `json:"cached_prompt_per_million,omitempty"`
	// CacheWritePerMillion prices prompt tokens written to a cache where a
	// provider bills them (Anthropic's cache_creation_input_tokens).
	CacheWritePerMillion *decimal.Decimal `json:"cache_write_per_million,omitempty"`
	// ReasoningPerMillion prices reasoning tokens (OpenAI's
	// completion_tokens_details.reasoning_tokens).
	ReasoningPerMillion *decimal.Decimal `json:"reasoning_per_million,omitempty"`
	// RequestFee is charged once per billable request of the model.
	RequestFee decimal.Decimal `json:"request_fee,omitzero"`
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
	models map[string][]modelVersion // by EffectiveFrom, oldest first
	ops    map[string]OperationPrice
	opAmts map[string][2]credits.Amount // per unit, per cached unit
}

// modelVersion is a ModelPrice with its prices as ledger amounts (unset
// prices resolved to the plain ones), which price a record without
// allocating.
type modelVersion struct {
	p    ModelPrice
	from int64 // EffectiveFrom in unix nanoseconds; math.MinInt64 when zero
	amt  [6]credits.Amount
}

// Indexes of modelVersion.amt.
const (
	pxPrompt = iota
	pxCached
	pxWrite
	pxCompletion
	pxReasoning
	pxFee
)

// NewPriceBook validates and returns a price book. Operation names must be
// unique and non-empty; a model may appear once per EffectiveFrom; prices
// must not be negative. It returns ErrInvalidPrice.
func NewPriceBook(models []ModelPrice, ops []OperationPrice) (*PriceBook, error) {
	pb := &PriceBook{models: make(map[string][]modelVersion, len(models)), ops: make(map[string]OperationPrice, len(ops)),
		opAmts: make(map[string][2]credits.Amount, len(ops))}
	for _, m := range models {
		v, err := newModelVersion(m)
		if err != nil {
			return nil, err
		}
		vs := pb.models[m.Model]
		i, dup := slices.BinarySearchFunc(vs, v.from, func(x modelVersion, t int64) int { return cmpInt(x.from, t) })
		if dup {
			return nil, fmt.Errorf("%w: duplicate model %q from %s", ErrInvalidPrice, m.Model, m.EffectiveFrom.Format(time.RFC3339Nano))
		}
		pb.models[m.Model] = slices.Insert(vs, i, v)
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

func newModelVersion(m ModelPrice) (modelVersion, error) {
	if m.Model == "" || m.PromptPerMillion.IsNegative() || m.CompletionPerMillion.IsNegative() || m.RequestFee.IsNegative() {
		return modelVersion{}, fmt.Errorf("%w: model %q", ErrInvalidPrice, m.Model)
	}
	if !m.EffectiveFrom.IsZero() && (m.EffectiveFrom.Year() < 1700 || m.EffectiveFrom.Year() >= 2200) {
		return modelVersion{}, fmt.Errorf("%w: model %q: effective time must be between 1700 and 2200", ErrInvalidPrice, m.Model)
	}
	v := modelVersion{p: m, from: minTime}
	if !m.EffectiveFrom.IsZero() {
		v.from = m.EffectiveFrom.UnixNano()
		v.p.EffectiveFrom = m.EffectiveFrom.UTC()
	}
	opt := func(p *decimal.Decimal, plain decimal.Decimal) (credits.Amount, error) {
		if p == nil {
			return credits.NewAmount(plain), nil
		}
		if p.IsNegative() {
			return credits.Amount{}, fmt.Errorf("%w: model %q", ErrInvalidPrice, m.Model)
		}
		c := *p // the book keeps its own copy
		return credits.NewAmount(c), nil
	}
	var err error
	v.amt[pxPrompt] = credits.NewAmount(m.PromptPerMillion)
	v.amt[pxCompletion] = credits.NewAmount(m.CompletionPerMillion)
	v.amt[pxFee] = credits.NewAmount(m.RequestFee)
	if v.amt[pxCached], err = opt(m.CachedPromptPerMillion, m.PromptPerMillion); err != nil {
		return v, err
	}
	if v.amt[pxWrite], err = opt(m.CacheWritePerMillion, m.PromptPerMillion); err != nil {
		return v, err
	}
	if v.amt[pxReasoning], err = opt(m.ReasoningPerMillion, m.CompletionPerMillion); err != nil {
		return v, err
	}
	v.p.CachedPromptPerMillion = copyDec(m.CachedPromptPerMillion)
	v.p.CacheWritePerMillion = copyDec(m.CacheWritePerMillion)
	v.p.ReasoningPerMillion = copyDec(m.ReasoningPerMillion)
	return v, nil
}

// minTime stands for a zero EffectiveFrom: before every time.
const minTime = -1 << 63

func copyDec(d *decimal.Decimal) *decimal.Decimal {
	if d == nil {
		return nil
	}
	c := *d
	return &c
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// version returns the version of model in force at t (the newest for a
// zero t), or nil.
func (pb *PriceBook) version(model string, t time.Time) *modelVersion {
	vs := pb.models[model]
	if len(vs) == 0 {
		return nil
	}
	if t.IsZero() {
		return &vs[len(vs)-1]
	}
	n := t.UnixNano()
	i, found := slices.BinarySearchFunc(vs, n, func(x modelVersion, t int64) int { return cmpInt(x.from, t) })
	if found {
		return &vs[i]
	}
	if i == 0 {
		return nil // every version starts later
	}
	return &vs[i-1]
}

// Model returns the newest version of a model's price.
func (pb *PriceBook) Model(name string) (ModelPrice, bool) {
	return pb.ModelAt(name, time.Time{})
}

// ModelAt returns the version of a model's price in force at t (the
// newest for a zero t); false if the model has none then.
func (pb *PriceBook) ModelAt(name string, t time.Time) (ModelPrice, bool) {
	v := pb.version(name, t)
	if v == nil {
		return ModelPrice{}, false
	}
	p := v.p
	p.CachedPromptPerMillion, p.CacheWritePerMillion, p.ReasoningPerMillion = copyDec(p.CachedPromptPerMillion), copyDec(p.CacheWritePerMillion), copyDec(p.ReasoningPerMillion)
	return p, true
}

// Operation returns the price of an operation.
func (pb *PriceBook) Operation(name string) (OperationPrice, bool) {
	o, ok := pb.ops[name]
	return o, ok
}

// Models returns the newest version of every model's price (in no
// particular order).
func (pb *PriceBook) Models() []ModelPrice {
	out := make([]ModelPrice, 0, len(pb.models))
	for name := range pb.models {
		m, _ := pb.Model(name)
		out = append(out, m)
	}
	return out
}

// TokenCost is the exact cost of plain prompt and completion tokens of a
// model (no cached or reasoning tokens) under its newest price, request
// fee included, or ErrUnknownModel. Cost prices a record under the
// version in force at its time.
func (pb *PriceBook) TokenCost(model string, prompt, completion int64) (credits.Amount, error) {
	return pb.Cost(Record{Model: model, PromptTokens: prompt, CompletionTokens: completion})
}

// Estimate is the most prompt and completion tokens of a model can cost
// under the version in force at t, whatever part of them turns out cached,
// written to a cache or reasoning: each prompt token at the highest of
// its prompt-side prices, each completion token at the higher of its
// completion-side prices, plus the request fee. A hold of this amount
// covers the request. It returns ErrUnknownModel or ErrInvalidRecord.
func (pb *PriceBook) Estimate(model string, t time.Time, prompt, completion int64) (credits.Amount, error) {
	v := pb.version(model, t)
	if v == nil {
		return credits.Amount{}, fmt.Errorf("%w: %q", ErrUnknownModel, model)
	}
	if prompt < 0 || completion < 0 || prompt > maxCount || completion > maxCount {
		return credits.Amount{}, ErrInvalidRecord
	}
	a := &v.amt
	pp := maxAmount(a[pxPrompt], maxAmount(a[pxCached], a[pxWrite]))
	cp := maxAmount(a[pxCompletion], a[pxReasoning])
	return pp.MulInt(prompt).Add(cp.MulInt(completion)).Shift(-6).Add(a[pxFee]), nil
}

func maxAmount(a, b credits.Amount) credits.Amount {
	if a.Cmp(b) >= 0 {
		return a
	}
	return b
}

// maxCount bounds every token count (validRecord's limit).
const maxCount = 1 << 50

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

// Cost prices a record: by model when it names one, under the model's
// price version in force at r.CreatedAt (the newest when zero), else by
// its endpoint as an operation. Records that are not billable (Billable
// reports false) cost zero. Token counts that are negative, or parts
// larger than their whole (CachedPromptTokens + CacheWriteTokens above
// PromptTokens, ReasoningTokens above CompletionTokens), are
// ErrInvalidRecord: nothing is ever charged twice.
func (pb *PriceBook) Cost(r Record) (credits.Amount, error) {
	c, _, err := pb.cost(&r)
	return c, err
}

// Rate prices r in place, as the one pricing step before Meter when a
// host uses the usage Service on its own: it sets r.Cost to Cost(*r) and
// r.PriceFrom to the EffectiveFrom of the model price version applied
// (zero for operations and records that are not billable), so that the
// stored record explains its charge and can be re-rated (Service.Rerate).
func (pb *PriceBook) Rate(r *Record) error {
	c, from, err := pb.cost(r)
	if err != nil {
		return err
	}
	r.Cost, r.PriceFrom = c, from
	return nil
}

func (pb *PriceBook) cost(r *Record) (credits.Amount, time.Time, error) {
	if !r.Billable() {
		return credits.Amount{}, time.Time{}, nil
	}
	if r.Model == "" {
		c, err := pb.OperationCost(r.Endpoint, r.Units, r.CachedUnits)
		return c, time.Time{}, err
	}
	v := pb.version(r.Model, r.CreatedAt)
	if v == nil {
		return credits.Amount{}, time.Time{}, fmt.Errorf("%w: %q", ErrUnknownModel, r.Model)
	}
	if err := validTokens(r); err != nil {
		return credits.Amount{}, time.Time{}, err
	}
	a := &v.amt
	plainPrompt := r.PromptTokens - r.CachedPromptTokens - r.CacheWriteTokens
	plainCompletion := r.CompletionTokens - r.ReasoningTokens
	// Shift(-6) divides by one million exactly: no rounding anywhere.
	sum := a[pxPrompt].MulInt(plainPrompt).Add(a[pxCompletion].MulInt(plainCompletion))
	if r.CachedPromptTokens != 0 {
		sum = sum.Add(a[pxCached].MulInt(r.CachedPromptTokens))
	}
	if r.CacheWriteTokens != 0 {
		sum = sum.Add(a[pxWrite].MulInt(r.CacheWriteTokens))
	}
	if r.ReasoningTokens != 0 {
		sum = sum.Add(a[pxReasoning].MulInt(r.ReasoningTokens))
	}
	sum = sum.Shift(-6)
	if !a[pxFee].IsZero() {
		sum = sum.Add(a[pxFee])
	}
	return sum, v.p.EffectiveFrom, nil
}

// validTokens checks a record's token counts: none negative or beyond
// 2^50, and the parts within their wholes.
func validTokens(r *Record) error {
	for _, n := range [...]int64{r.PromptTokens, r.CompletionTokens, r.CachedPromptTokens, r.CacheWriteTokens, r.ReasoningTokens} {
		if n < 0 || n > maxCount {
			return fmt.Errorf("%w: token counts must be 0 to 2^50", ErrInvalidRecord)
		}
	}
	if r.CachedPromptTokens+r.CacheWriteTokens > r.PromptTokens {
		return fmt.Errorf("%w: cached and cache-write tokens exceed prompt tokens", ErrInvalidRecord)
	}
	if r.ReasoningTokens > r.CompletionTokens {
		return fmt.Errorf("%w: reasoning tokens exceed completion tokens", ErrInvalidRecord)
	}
	return nil
}
