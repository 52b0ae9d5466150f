package main

import (
	"context"
	"math"
)

// usageCounters are the account's verifications today and this month (in
// its time zone) and this month's cache hit rate, from the usage rollups.
func (s *api) usageCounters(ctx context.Context, accountID, tz string) (map[string]any, error) {
	c, err := s.kl.Usage.Counters(ctx, accountID, tz)
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"verifications_today":      c.Today.Units,
		"verifications_this_month": c.ThisMonth.Units,
		"cache_hit_rate":           math.Round(c.CacheHitRate*10000) / 10000,
	}, nil
}
