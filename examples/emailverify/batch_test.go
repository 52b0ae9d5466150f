package main

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/examples/internal/profiles"
	"github.com/keyledger/keyledger/internal/storewrap"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/sqlitestore"
	"github.com/keyledger/keyledger/usage"
)

// faultStore is the SQLite store with hooks: onSpends runs before every
// ApplySpends (the ledger's group commit), meterErr, if set, fails every
// MeterUsage without writing, and creditErr every LedgerCredit.
type faultStore struct {
	storewrap.Base
	onSpends  func()
	meterErr  error
	creditErr atomic.Pointer[error] // if set, every LedgerCredit fails with it
}

func (f *faultStore) LedgerCredit(ctx context.Context, now time.Time, r credits.CreditRequest) (credits.Entry, error) {
	if e := f.creditErr.Load(); e != nil {
		return credits.Entry{}, *e
	}
	return f.Store.LedgerCredit(ctx, now, r)
}

func (f *faultStore) ApplySpends(ctx context.Context, now time.Time, reqs []credits.SpendRequest, res []credits.SpendResult) error {
	if f.onSpends != nil {
		f.onSpends()
	}
	return f.Store.ApplySpends(ctx, now, reqs, res)
}

func (f *faultStore) MeterUsage(ctx context.Context, now time.Time, reqs []usage.MeterRequest, res []usage.MeterOutcome) error {
	if f.meterErr != nil {
		return f.meterErr
	}
	return f.Store.MeterUsage(ctx, now, reqs, res)
}

// newBatchAPI returns the API over a faultStore and a job for an account
// with 100 credits, ready for reserve and process.
func newBatchAPI(t *testing.T, emails ...string) (*api, *faultStore, *job) {
	t.Helper()
	ctx := context.Background()
	quiet := slog.New(slog.DiscardHandler)
	path := filepath.Join(t.TempDir(), "ev.db")
	st, err := sqlitestore.Open(ctx, path, &sqlitestore.Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	fs := &faultStore{Base: storewrap.Base{Store: store.Driver(st)}}
	prof, _ := profiles.Get(profiles.EmailVerify)
	kl, err := keyledger.New(store.Wrap(fs), prof.Options(nil, quiet))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kl.Close(context.Background()); st.Close() })
	a, err := kl.Signup(ctx, account.CreateParams{Name: "Ada", Email: "ada@example.com", Plan: "professional"})
	if err != nil {
		t.Fatal(err)
	}
	bal, _ := kl.Credits.Balance(ctx, a.ID)
	if _, err := kl.Credits.Adjust(ctx, credits.CreditParams{AccountID: a.ID, Amount: credits.AmountFromInt(100).Sub(bal), IdempotencyKey: "adj"}); err != nil {
		t.Fatal(err)
	}
	store, err := openJobStore(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	s := &api{kl: kl, log: quiet, now: time.Now, check: newChecker(newFakeDNS(t), time.Now),
		jobs: newJobs(ctx, time.Now, store)}
	j := &job{ID: s.jobs.ids.New("job_"), AccountID: a.ID, TimeZone: "UTC", Emails: emails, CreatedAt: time.Now(),
		done: make(chan struct{}), status: JobProcessing}
	if ok, _, err := s.jobs.admit(ctx, j); !ok || err != nil {
		t.Fatalf("admit: %v %v", ok, err)
	}
	return s, fs, j
}

func held(t *testing.T, s *api, accountID string) credits.Amount {
	t.Helper()
	a, err := s.kl.Credits.Account(context.Background(), accountID)
	if err != nil {
		t.Fatal(err)
	}
	return a.Held
}

// A client that disconnects while its batch's holds are being written
// strands none of them: the holds already committed are found and
// released.
func TestReserveClientGoneReleasesHolds(t *testing.T) {
	emails := make([]string, 40)
	for i := range emails {
		emails[i] = "u@example.com"
	}
	s, fs, j := newBatchAPI(t, emails...)
	ctx, cancel := context.WithCancel(context.Background())
	var once sync.Once
	fs.onSpends = func() { once.Do(cancel) } // the client leaves during the first write
	holds, err := s.reserve(ctx, j)
	if !errors.Is(err, context.Canceled) || holds != nil {
		t.Fatalf("reserve: %d holds, %v; want context.Canceled", len(holds), err)
	}
	// Let every write the client left behind commit before looking.
	if err := s.kl.Credits.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if h := held(t, s, j.AccountID); !h.IsZero() {
		t.Fatalf("%s credits still held after the client left", h)
	}
}

// An item whose metering fails releases its hold instead of leaving it
// until the TTL.
func TestProcessMeterFailureReleasesHold(t *testing.T) {
	s, fs, j := newBatchAPI(t, "a@example.com", "b@example.com")
	holds, err := s.reserve(context.Background(), j)
	if err != nil {
		t.Fatal(err)
	}
	if h := held(t, s, j.AccountID); !h.Equal(credits.AmountFromInt(2)) {
		t.Fatalf("held %s, want 2", h)
	}
	fs.meterErr = errors.New("disk on fire")
	s.process(context.Background(), j, holds)
	if h := held(t, s, j.AccountID); !h.IsZero() {
		t.Fatalf("%s credits still held after metering failed", h)
	}
	for _, r := range j.view().Results {
		if r.Result != Unknown || r.Reason != "internal_error" {
			t.Fatalf("result %+v", r)
		}
	}
}
