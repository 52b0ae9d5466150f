//go:build !usagemerged

package main

import "context"

// usageCounters is filled in once the usage Service lands.
func (s *api) usageCounters(ctx context.Context, accountID, tz string) (map[string]any, error) {
	return map[string]any{"verifications_today": 0, "verifications_this_month": 0, "cache_hit_rate": 0}, nil
}
