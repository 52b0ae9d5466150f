package usage

import (
	"context"
	"fmt"
	"slices"

	"github.com/keyledger/keyledger/credits"
)

// Rerate reports what the account's records matching q (every page;
// q.Cursor and q.Limit are ignored) were charged and what pb would charge
// for them: one row per model (per endpoint for records without a model),
// sorted, then a total row with every dimension empty. Each row's Cost is
// what was charged (the stored Record.Cost, under the price in force when
// the record was made), Rerated what pb charges the same records under its
// version in force at each record's time, and Difference = Rerated − Cost,
// all exact. Records that are not billable count zero on both sides; a
// model or operation missing from pb is ErrUnknownModel or
// ErrUnknownOperation. It reads the records a page at a time, so memory
// stays bounded by a page plus one row per model. Nothing is written.
func (s *Service) Rerate(ctx context.Context, q ListQuery, pb *PriceBook) ([]SummaryRow, error) {
	if pb == nil {
		return nil, fmt.Errorf("%w: nil price book", ErrInvalidQuery)
	}
	q.Cursor, q.Limit = "", MaxListLimit
	groups := make(map[[2]string]*SummaryRow)
	var total SummaryRow
	for {
		pg, err := s.List(ctx, q)
		if err != nil {
			return nil, err
		}
		for i := range pg.Records {
			r := &pg.Records[i]
			k := [2]string{r.Model, ""}
			if r.Model == "" {
				k[1] = r.Endpoint
			}
			row := groups[k]
			if row == nil {
				row = &SummaryRow{Model: k[0], Endpoint: k[1]}
				groups[k] = row
			}
			rerated, err := pb.Cost(*r)
			if err != nil {
				return nil, fmt.Errorf("usage: rerating record %s: %w", r.ID, err)
			}
			row.addRerated(r, rerated)
			total.addRerated(r, rerated)
		}
		if pg.NextCursor == "" {
			break
		}
		q.Cursor = pg.NextCursor
	}
	out := make([]SummaryRow, 0, len(groups)+1)
	for _, row := range groups {
		out = append(out, *row)
	}
	slices.SortFunc(out, func(a, b SummaryRow) int { return cmpStrings(a.Model, b.Model, a.Endpoint, b.Endpoint) })
	out = append(out, total)
	for i := range out {
		out[i].TotalTokens = out[i].PromptTokens + out[i].CompletionTokens
		out[i].Difference = out[i].Rerated.Sub(out[i].Cost)
	}
	return out, nil
}

// addRerated adds a record, charged r.Cost and rerated at rerated, to a
// Rerate row.
func (row *SummaryRow) addRerated(r *Record, rerated credits.Amount) {
	row.Requests++
	if !r.Billable() {
		row.Errors++
	}
	row.PromptTokens += r.PromptTokens
	row.CompletionTokens += r.CompletionTokens
	row.Units += r.Units
	row.CachedUnits += r.CachedUnits
	row.CachedPromptTokens += r.CachedPromptTokens
	row.CacheWriteTokens += r.CacheWriteTokens
	row.ReasoningTokens += r.ReasoningTokens
	row.Cost = row.Cost.Add(r.Cost)
	row.Rerated = row.Rerated.Add(rerated)
}
