package dashboard

import (
	"strings"
	"time"
	"unicode/utf8"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/usage"
)

// Limits of form input.
const (
	maxModels     = 100
	maxModelLen   = 200
	maxRangeDays  = 366
	dateLayout    = "2006-01-02"
	defaultDays   = 30
	maxAmountText = 40
)

// parseModels reads a key's allowed models from a form: checkbox values,
// or one text field of names separated by commas, spaces or new lines.
// Names are trimmed and deduplicated; when choices is not empty each must
// be one of them. No models means all models.
func parseModels(values []string, choices []string) ([]string, error) {
	var out []string
	for _, v := range values {
		if len(v) > maxModels*(maxModelLen+1) {
			return nil, userErrorf("The model list is too long.")
		}
		for _, m := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\r' || r == '\t' }) {
			if !utf8.ValidString(m) || len(m) > maxModelLen {
				return nil, userErrorf("Model names are at most %d characters.", maxModelLen)
			}
			if len(choices) > 0 && !contains(choices, m) {
				return nil, userErrorf("Unknown model %q.", m)
			}
			if !contains(out, m) {
				out = append(out, m)
			}
			if len(out) > maxModels {
				return nil, userErrorf("A key may name at most %d models.", maxModels)
			}
		}
	}
	return out, nil
}

// parseExpiry reads a key's expiry date ("2006-01-02", "" for never): the
// key expires at the end of that day in loc. The day must not have ended.
func parseExpiry(s string, loc *time.Location, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, nil
	}
	d, err := time.ParseInLocation(dateLayout, s, loc)
	if err != nil {
		return time.Time{}, userErrorf("The expiry must be a date like 2026-12-31.")
	}
	end := d.AddDate(0, 0, 1)
	if !end.After(now) {
		return time.Time{}, userErrorf("The expiry date must be today or later.")
	}
	if d.Year() > 9999 || end.Sub(now) > 100*365*24*time.Hour {
		return time.Time{}, userErrorf("The expiry date is too far away.")
	}
	return end, nil
}

// dateRange is a usage query's inclusive range of local days.
type dateRange struct {
	From, To string // "2006-01-02"
	Days     []string
}

// parseDateRange reads the from and to query parameters (inclusive days
// in loc). Empty values default to the last 30 days ending today; from
// after to, or a range of more than 366 days, is refused.
func parseDateRange(from, to string, loc *time.Location, now time.Time) (dateRange, error) {
	today := now.In(loc)
	today = time.Date(today.Year(), today.Month(), today.Day(), 0, 0, 0, 0, loc)
	end, start := today, today.AddDate(0, 0, -(defaultDays-1))
	var err error
	if to != "" {
		if end, err = time.ParseInLocation(dateLayout, to, loc); err != nil {
			return dateRange{}, userErrorf("Dates look like 2026-01-31.")
		}
		if from == "" {
			start = end.AddDate(0, 0, -(defaultDays - 1))
		}
	}
	if from != "" {
		if start, err = time.ParseInLocation(dateLayout, from, loc); err != nil {
			return dateRange{}, userErrorf("Dates look like 2026-01-31.")
		}
	}
	if start.Year() < 1970 || end.Year() > 9999 {
		return dateRange{}, userErrorf("Dates must be between 1970 and 9999.")
	}
	if start.After(end) {
		return dateRange{}, userErrorf("The start date must not be after the end date.")
	}
	dr := dateRange{From: start.Format(dateLayout), To: end.Format(dateLayout)}
	// Count calendar days, not hours: days are 23 or 25 hours long across
	// DST changes.
	for d := start; !d.After(end); d = time.Date(d.Year(), d.Month(), d.Day()+1, 0, 0, 0, 0, loc) {
		if len(dr.Days) == maxRangeDays {
			return dateRange{}, userErrorf("A range covers at most %d days.", maxRangeDays)
		}
		dr.Days = append(dr.Days, d.Format(dateLayout))
	}
	return dr, nil
}

// parseGroup reads the usage table's grouping: model (the default), key
// or date.
func parseGroup(s string) (usage.GroupField, error) {
	switch usage.GroupField(s) {
	case "", usage.GroupModel:
		return usage.GroupModel, nil
	case usage.GroupKey:
		return usage.GroupKey, nil
	case usage.GroupDate:
		return usage.GroupDate, nil
	}
	return "", userErrorf("Group by model, key or date.")
}

// parseAmount reads a positive amount of credits to buy or recharge: a
// decimal number (a leading currency symbol or label and thousands
// separators are tolerated) that is a multiple of the unit's increment.
func parseAmount(s string, u credits.Unit, label string) (credits.Amount, error) {
	s = strings.TrimSpace(s)
	if len(s) > maxAmountText {
		return credits.Amount{}, userErrorf("Enter an amount like 500 or 499.99.")
	}
	s = strings.TrimSpace(strings.TrimPrefix(strings.TrimSuffix(s, label), label))
	s = strings.TrimPrefix(s, "₹")
	s = strings.ReplaceAll(strings.TrimSpace(s), ",", "")
	if s == "" || strings.ContainsAny(s, "eE+-") {
		return credits.Amount{}, userErrorf("Enter an amount like 500 or 499.99.")
	}
	a, err := credits.ParseAmount(s)
	if err != nil || !a.IsPositive() {
		return credits.Amount{}, userErrorf("Enter an amount like 500 or 499.99.")
	}
	if inc := u.Increment; inc.IsPositive() && !a.MultipleOf(inc) {
		return credits.Amount{}, userErrorf("The amount must be a multiple of %s.", inc.Decimal().String())
	}
	return a, nil
}

// periodChoices are the spend-limit periods the key form offers.
var periodChoices = []struct{ Value, Label string }{
	{"day", "per day"}, {"week", "per week (from Monday)"}, {"month", "per calendar month"}, {"lifetime", "for the key's lifetime"},
}

// parseSpendLimit reads a key's spend-limit form: a positive amount (as
// parseAmount) and one of periodChoices.
func parseSpendLimit(amount, period string, u credits.Unit, label string) (keyledger.SpendLimit, error) {
	p := credits.Period(period)
	if !p.Valid() {
		return keyledger.SpendLimit{}, userErrorf("Choose a period: day, week, month or lifetime.")
	}
	a, err := parseAmount(amount, u, label)
	if err != nil {
		return keyledger.SpendLimit{}, err
	}
	return keyledger.SpendLimit{Amount: a, Period: p}, nil
}

// graceChoices are the grace periods a rotation offers, by form value.
var graceChoices = []struct {
	Value, Label string
	D            time.Duration
}{
	{"0", "None: the old secret stops working now", 0},
	{"1h", "1 hour", time.Hour},
	{"24h", "24 hours", 24 * time.Hour},
	{"168h", "7 days", 7 * 24 * time.Hour},
}

// parseGrace reads a rotation's grace period: one of graceChoices.
func parseGrace(s string) (time.Duration, error) {
	for _, g := range graceChoices {
		if g.Value == s {
			return g.D, nil
		}
	}
	return 0, userErrorf("Choose a grace period from the list.")
}
