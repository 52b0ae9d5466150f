// Package query reads the query-string and flag parameters of usage lists
// and summaries that the example servers and the admin CLI share: page
// size, grouping and calendar dates. Each returns usage.ErrInvalidQuery
// for input it refuses, so the examples' error tables answer 400.
package query

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/keyledger/keyledger/usage"
)

// Limit reads a client's limit parameter: "" gives usage.DefaultListLimit
// (50); anything else must be an integer and is clamped to 1..500. It
// returns usage.ErrInvalidQuery for text that is not an integer.
func Limit(s string) (int, error) {
	if s == "" {
		return usage.DefaultListLimit, nil
	}
	if len(s) > 32 {
		return 0, fmt.Errorf("%w: limit %q", usage.ErrInvalidQuery, s[:32])
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil {
		if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
			if strings.HasPrefix(strings.TrimSpace(s), "-") {
				return 1, nil
			}
			return usage.MaxListLimit, nil
		}
		return 0, fmt.Errorf("%w: limit %q", usage.ErrInvalidQuery, s)
	}
	return int(min(max(n, 1), usage.MaxListLimit)), nil
}

// GroupBy reads a comma-separated group_by parameter ("date,model";
// "" groups by date). It accepts each of date, model, key and endpoint at
// most once, and returns usage.ErrInvalidQuery otherwise.
func GroupBy(s string) ([]usage.GroupField, error) {
	if s == "" {
		return []usage.GroupField{usage.GroupDate}, nil
	}
	if len(s) > 64 {
		return nil, fmt.Errorf("%w: group_by too long", usage.ErrInvalidQuery)
	}
	var out []usage.GroupField
	for _, part := range strings.Split(s, ",") {
		f := usage.GroupField(strings.TrimSpace(part))
		switch f {
		case usage.GroupDate, usage.GroupModel, usage.GroupKey, usage.GroupEndpoint:
		default:
			return nil, fmt.Errorf("%w: group_by %q", usage.ErrInvalidQuery, truncate(string(f), 16))
		}
		if slices.Contains(out, f) {
			return nil, fmt.Errorf("%w: group_by repeats %q", usage.ErrInvalidQuery, f)
		}
		out = append(out, f)
	}
	return out, nil
}

// Date reads a calendar date "2006-01-02" (as in Forii's start and end
// parameters), or returns usage.ErrInvalidQuery.
func Date(s string) (time.Time, error) {
	if len(s) != len(time.DateOnly) {
		return time.Time{}, fmt.Errorf("%w: date %q", usage.ErrInvalidQuery, truncate(s, 16))
	}
	t, err := time.Parse(time.DateOnly, s)
	if err != nil || t.Year() < 1970 || t.Year() > 9999 {
		return time.Time{}, fmt.Errorf("%w: date %q", usage.ErrInvalidQuery, s)
	}
	return t, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
