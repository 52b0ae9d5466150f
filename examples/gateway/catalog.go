package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/shopspring/decimal"

	"github.com/keyledger/keyledger/examples/gateway/internal/openai"
	"github.com/keyledger/keyledger/usage"
)

// catalogModel is one model of the -models file:
//
//	{"models": [{"id": "forii/deepseek-v3", "owned_by": "forii",
//	  "prompt_inr_per_1m": 330.00, "completion_inr_per_1m": 350.00,
//	  "upstream_model": "deepseek-chat"}]}
//
// Optional prices, as providers bill them: cached_prompt_inr_per_1m (the
// prompt tokens the upstream reports in prompt_tokens_details.cached_tokens),
// cache_write_inr_per_1m (prompt tokens written to a cache, where a
// provider bills them), reasoning_inr_per_1m (the completion tokens of
// completion_tokens_details.reasoning_tokens) and request_fee_inr (per
// request). An absent one bills those tokens at the plain prompt or
// completion price, so an older file charges what it always did. Cached
// and reasoning tokens are parts of the prompt and completion counts and
// are never charged twice.
//
// Prices are dated: "prices" lists later versions of the model's price,
// each with an RFC 3339 "effective_from" and its own prompt and completion
// (and optional) prices; the top-level prices apply before the first of
// them. A request is charged by the version in force when it completes, and
// the record keeps which one (usage.Record.PriceFrom):
//
//	{"id": "forii/deepseek-v3", "prompt_inr_per_1m": 330, "completion_inr_per_1m": 350,
//	  "prices": [{"effective_from": "2027-01-01T00:00:00+05:30",
//	    "prompt_inr_per_1m": 300, "completion_inr_per_1m": 350, "cached_prompt_inr_per_1m": 75}]}
//
// upstream_model is the name sent to -upstream ("" keeps id).
// upstream_limit_field is the request field the upstream reads the
// completion limit from: "max_completion_tokens" (the default, OpenAI's) or
// "max_tokens" (servers that read only it, such as some Ollama and
// llama.cpp builds). The gateway always sends the reserved limit in exactly
// that field and removes the other.
type catalogModel struct {
	ID                 string         `json:"id"`
	OwnedBy            string         `json:"owned_by"`
	PromptINRPer1M     openai.Decimal `json:"prompt_inr_per_1m"`
	CompletionINRPer1M openai.Decimal `json:"completion_inr_per_1m"`
	catalogPrice
	UpstreamModel      string              `json:"upstream_model,omitempty"`
	UpstreamLimitField string              `json:"upstream_limit_field,omitempty"`
	Prices             []catalogDatedPrice `json:"prices,omitempty"`
}

// catalogPrice holds a model's optional prices (see catalogModel).
type catalogPrice struct {
	CachedPromptINRPer1M *openai.Decimal `json:"cached_prompt_inr_per_1m,omitempty"`
	CacheWriteINRPer1M   *openai.Decimal `json:"cache_write_inr_per_1m,omitempty"`
	ReasoningINRPer1M    *openai.Decimal `json:"reasoning_inr_per_1m,omitempty"`
	RequestFeeINR        *openai.Decimal `json:"request_fee_inr,omitempty"`
}

// catalogDatedPrice is a later version of a model's price.
type catalogDatedPrice struct {
	EffectiveFrom      time.Time      `json:"effective_from"`
	PromptINRPer1M     openai.Decimal `json:"prompt_inr_per_1m"`
	CompletionINRPer1M openai.Decimal `json:"completion_inr_per_1m"`
	catalogPrice
}

// maxPriceVersions bounds the dated prices of one model.
const maxPriceVersions = 100

// modelPrice is the usage.ModelPrice of a version.
func (p catalogPrice) modelPrice(id string, from time.Time, prompt, completion openai.Decimal) usage.ModelPrice {
	opt := func(d *openai.Decimal) *decimal.Decimal {
		if d == nil {
			return nil
		}
		v := d.Decimal
		return &v
	}
	mp := usage.ModelPrice{Model: id, EffectiveFrom: from, PromptPerMillion: prompt.Decimal, CompletionPerMillion: completion.Decimal,
		CachedPromptPerMillion: opt(p.CachedPromptINRPer1M), CacheWritePerMillion: opt(p.CacheWriteINRPer1M),
		ReasoningPerMillion: opt(p.ReasoningINRPer1M)}
	if p.RequestFeeINR != nil {
		mp.RequestFee = p.RequestFeeINR.Decimal
	}
	return mp
}

type catalogFile struct {
	Models []catalogModel `json:"models"`
}

// catalog is the gateway's model list and the PriceBook built from it.
type catalog struct {
	models []catalogModel
	byID   map[string]catalogModel
	prices *usage.PriceBook
	list   openai.ModelList
}

// defaultCatalog is used without -models. forii/deepseek-v3's prices make
// the Forii usage example exact: 1,250,000 prompt and 340,000 completion
// tokens cost ₹531.50.
func defaultCatalog() catalogFile {
	d := func(s string) openai.Decimal { return openai.NewDecimal(decimal.RequireFromString(s)) }
	return catalogFile{Models: []catalogModel{
		{ID: "forii/deepseek-v3", OwnedBy: "forii", PromptINRPer1M: d("330"), CompletionINRPer1M: d("350")},
		{ID: "forii/llama-3.1-8b", OwnedBy: "forii", PromptINRPer1M: d("8"), CompletionINRPer1M: d("8")},
		{ID: "forii/qwen2.5-72b", OwnedBy: "forii", PromptINRPer1M: d("60"), CompletionINRPer1M: d("75.50")},
	}}
}

// maxCatalogBytes bounds a -models file.
const maxCatalogBytes = 1 << 20

// loadCatalog reads a -models file, or returns the default catalog for "".
func loadCatalog(path string) (*catalog, error) {
	if path == "" {
		return newCatalog(defaultCatalog())
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("-models: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxCatalogBytes+1))
	if err != nil {
		return nil, fmt.Errorf("-models: %w", err)
	}
	cf, err := parseCatalog(b)
	if err != nil {
		return nil, fmt.Errorf("-models %s: %w", path, err)
	}
	return newCatalog(cf)
}

var errCatalog = errors.New("invalid model catalog")

// parseCatalog decodes a catalog file strictly: unknown fields, wrong types
// and trailing data are errors.
func parseCatalog(b []byte) (catalogFile, error) {
	var cf catalogFile
	if len(b) > maxCatalogBytes {
		return cf, fmt.Errorf("%w: larger than 1 MiB", errCatalog)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cf); err != nil {
		return cf, fmt.Errorf("%w: %v", errCatalog, err)
	}
	if dec.More() {
		return cf, fmt.Errorf("%w: trailing data", errCatalog)
	}
	return cf, nil
}

func newCatalog(cf catalogFile) (*catalog, error) {
	if len(cf.Models) == 0 {
		return nil, fmt.Errorf("%w: no models", errCatalog)
	}
	c := &catalog{models: cf.Models, byID: make(map[string]catalogModel, len(cf.Models))}
	prices := make([]usage.ModelPrice, 0, len(cf.Models))
	entries := make([]openai.Model, 0, len(cf.Models))
	for _, m := range cf.Models {
		if m.ID == "" || len(m.ID) > 200 {
			return nil, fmt.Errorf("%w: model id must be 1-200 bytes", errCatalog)
		}
		switch m.UpstreamLimitField {
		case "", openai.LimitMaxCompletionTokens, openai.LimitMaxTokens:
		default:
			return nil, fmt.Errorf("%w: model %s: upstream_limit_field must be %q or %q", errCatalog, m.ID, openai.LimitMaxCompletionTokens, openai.LimitMaxTokens)
		}
		if m.OwnedBy == "" {
			m.OwnedBy = "system"
		}
		c.byID[m.ID] = m
		prices = append(prices, m.modelPrice(m.ID, time.Time{}, m.PromptINRPer1M, m.CompletionINRPer1M))
		if len(m.Prices) > maxPriceVersions {
			return nil, fmt.Errorf("%w: model %s: at most %d dated prices", errCatalog, m.ID, maxPriceVersions)
		}
		for _, v := range m.Prices {
			if v.EffectiveFrom.IsZero() {
				return nil, fmt.Errorf("%w: model %s: every dated price needs effective_from", errCatalog, m.ID)
			}
			prices = append(prices, v.modelPrice(m.ID, v.EffectiveFrom, v.PromptINRPer1M, v.CompletionINRPer1M))
		}
		entries = append(entries, openai.Model{ID: m.ID, OwnedBy: m.OwnedBy, Pricing: openai.Pricing{PromptINRPer1M: m.PromptINRPer1M,
			CompletionINRPer1M: m.CompletionINRPer1M, CachedPromptINRPer1M: m.CachedPromptINRPer1M, CacheWriteINRPer1M: m.CacheWriteINRPer1M,
			ReasoningINRPer1M: m.ReasoningINRPer1M, RequestFeeINR: m.RequestFeeINR}})
	}
	pb, err := usage.NewPriceBook(prices, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errCatalog, err)
	}
	c.prices = pb
	c.list = openai.NewModelList(entries...)
	return c, nil
}
