package main

import (
	"context"
	"errors"
	"hash/fnv"
	"strings"
	"unicode/utf8"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/examples/internal/jsonapi"
)

// Upstream is the paid data provider behind the tools (OpenRush's
// DataForSEO). Each call reports what it cost in US dollars, also when it
// fails after doing work.
type Upstream interface {
	InspectDomain(ctx context.Context, domain string) (DomainReport, credits.Amount, error)
	KeywordVolume(ctx context.Context, keyword string) (KeywordReport, credits.Amount, error)
}

// DomainReport is the result of inspect_domain.
type DomainReport struct {
	Domain         string   `json:"domain"`
	DomainRank     int      `json:"domain_rank"`
	Backlinks      int64    `json:"backlinks"`
	ReferringHosts int64    `json:"referring_domains"`
	OrganicTraffic int64    `json:"organic_traffic"`
	TopKeywords    []string `json:"top_keywords"`
}

// KeywordReport is the result of keyword_volume.
type KeywordReport struct {
	Keyword      string `json:"keyword"`
	SearchVolume int64  `json:"search_volume"`
	Difficulty   int    `json:"keyword_difficulty"`
	CPCUSD       string `json:"cpc_usd"`
}

// errUpstream is a failure of the upstream provider.
var errUpstream = errors.New("upstream provider failed")

// simulated is a deterministic Upstream: the same input gives the same
// report. Domains under the reserved ".invalid" TLD make it fail, so that
// failures can be tried by hand and in tests.
type simulated struct{}

func seed(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	return h.Sum64()
}

func (simulated) InspectDomain(ctx context.Context, domain string) (DomainReport, credits.Amount, error) {
	if err := ctx.Err(); err != nil {
		return DomainReport{}, credits.Amount{}, err
	}
	if strings.HasSuffix(domain, ".invalid") {
		return DomainReport{}, credits.Amount{}, errUpstream
	}
	n := seed(domain)
	return DomainReport{
		Domain: domain, DomainRank: int(n % 1000), Backlinks: int64(n % 1_000_000),
		ReferringHosts: int64(n % 10_000), OrganicTraffic: int64(n % 500_000),
		TopKeywords: []string{strings.SplitN(domain, ".", 2)[0], "best " + strings.SplitN(domain, ".", 2)[0]},
	}, credits.AmountFromMinor(20, 4), nil // $0.0020
}

func (simulated) KeywordVolume(ctx context.Context, keyword string) (KeywordReport, credits.Amount, error) {
	if err := ctx.Err(); err != nil {
		return KeywordReport{}, credits.Amount{}, err
	}
	n := seed(keyword)
	return KeywordReport{
		Keyword: keyword, SearchVolume: int64(n % 100_000), Difficulty: int(n % 100),
		CPCUSD: credits.AmountFromMinor(int64(n%500), 2).String(),
	}, credits.AmountFromMinor(5, 4), nil // $0.0005
}

// inspectDomainRequest is the body of POST /v1/tools/inspect_domain.
type inspectDomainRequest struct {
	Domain string `json:"domain"`
}

// keywordVolumeRequest is the body of POST /v1/tools/keyword_volume.
type keywordVolumeRequest struct {
	Keyword string `json:"keyword"`
}

// parseInspectDomain reads and validates an inspect_domain body.
func parseInspectDomain(b []byte) (inspectDomainRequest, error) {
	var req inspectDomainRequest
	if err := jsonapi.DecodeBytes(b, &req); err != nil {
		return req, err
	}
	d, err := normalizeDomain(req.Domain)
	req.Domain = d
	return req, err
}

// parseKeywordVolume reads and validates a keyword_volume body.
func parseKeywordVolume(b []byte) (keywordVolumeRequest, error) {
	var req keywordVolumeRequest
	if err := jsonapi.DecodeBytes(b, &req); err != nil {
		return req, err
	}
	req.Keyword = strings.TrimSpace(req.Keyword)
	if req.Keyword == "" || utf8.RuneCountInString(req.Keyword) > 200 || !utf8.ValidString(req.Keyword) {
		return req, jsonapi.Invalid("keyword must be 1-200 characters.")
	}
	return req, nil
}

// normalizeDomain lower-cases a host name and checks it: 1-253 characters,
// at least two labels of a-z, 0-9 and inner '-', each 1-63 long.
func normalizeDomain(s string) (string, error) {
	d := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(s)), ".")
	bad := jsonapi.Invalid("domain must be a host name such as example.com.")
	if d == "" || len(d) > 253 {
		return "", bad
	}
	labels := strings.Split(d, ".")
	if len(labels) < 2 {
		return "", bad
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return "", bad
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return "", bad
			}
		}
	}
	return d, nil
}
