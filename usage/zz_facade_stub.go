package usage

// TEMPORARY scaffolding for the facade branch until the real usage Service
// (issue 6, branch usage) is merged; this file is deleted at that merge.

import (
	"context"
	"log/slog"
	"time"

	"github.com/keyledger/keyledger/credits"
)

type Options struct {
	Now      func() time.Time
	IDPrefix string
	Prices   *PriceBook
	Credits  *credits.Service
	MaxBatch int
	MaxWait  time.Duration
	Logger   *slog.Logger
}

type Store interface{}

type Service struct{ o Options }

func NewService(_ Store, opts *Options) (*Service, error) { return &Service{o: *opts}, nil }

type MeterParams struct {
	Record         Record
	HoldID         string
	IdempotencyKey string
	TimeZone       string
}

type MeterResult struct {
	Record             Record
	Entry              credits.Entry
	Charged, Shortfall credits.Amount
	Replayed           bool
}

func (s *Service) Meter(ctx context.Context, p MeterParams) (MeterResult, error) {
	r := p.Record
	if !r.Billable() {
		r.Cost = credits.Amount{}
	}
	if p.HoldID != "" {
		if !r.Billable() {
			_, err := s.o.Credits.Release(ctx, p.HoldID)
			return MeterResult{Record: r}, err
		}
		st, err := s.o.Credits.Settle(ctx, credits.SettleParams{HoldID: p.HoldID, Actual: r.Cost})
		return MeterResult{Record: r, Entry: st.Entry, Charged: st.Charged, Shortfall: st.Shortfall}, err
	}
	if r.Cost.IsPositive() {
		e, err := s.o.Credits.Debit(ctx, credits.DebitParams{AccountID: r.AccountID, Amount: r.Cost, IdempotencyKey: p.IdempotencyKey})
		return MeterResult{Record: r, Entry: e, Charged: r.Cost}, err
	}
	return MeterResult{Record: r}, nil
}

func (s *Service) Close(context.Context) error { return nil }

type ListQuery struct {
	AccountID string
	Limit     int
}
type RecordPage struct{ Records []Record }

func (s *Service) List(context.Context, ListQuery) (RecordPage, error) { return RecordPage{}, nil }
