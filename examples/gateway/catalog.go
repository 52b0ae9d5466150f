package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

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
	UpstreamModel      string         `json:"upstream_model,omitempty"`
	UpstreamLimitField string         `json:"upstream_limit_field,omitempty"`
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
		prices = append(prices, usage.ModelPrice{Model: m.ID, PromptPerMillion: m.PromptINRPer1M.Decimal, CompletionPerMillion: m.CompletionINRPer1M.Decimal})
		entries = append(entries, openai.Model{ID: m.ID, OwnedBy: m.OwnedBy, Pricing: openai.Pricing{PromptINRPer1M: m.PromptINRPer1M, CompletionINRPer1M: m.CompletionINRPer1M}})
	}
	pb, err := usage.NewPriceBook(prices, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errCatalog, err)
	}
	c.prices = pb
	c.list = openai.NewModelList(entries...)
	return c, nil
}
