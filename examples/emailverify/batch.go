package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/examples/internal/jsonapi"
	"github.com/keyledger/keyledger/examples/internal/profiles"
	"github.com/keyledger/keyledger/httpapi"
	"github.com/keyledger/keyledger/internal/id"
	"github.com/keyledger/keyledger/usage"
)

// Batch limits. Jobs live in memory, so their number is bounded: each
// account keeps at most maxJobsPerAccount jobs (about 1,000 results each),
// and a finished job is forgotten jobTTL after it ended.
const (
	maxBatch          = 1000
	maxJobsPerAccount = 20
	jobTTL            = time.Hour
	batchHoldTTL      = time.Hour
	// reserveWorkers reserve a batch's holds concurrently, so that the
	// ledger's group commit writes them in few transactions.
	reserveWorkers = 16
)

// Job states.
const (
	JobProcessing = "processing"
	JobCompleted  = "completed"
	JobCancelled  = "cancelled"
)

// job is one batch verification. Its funds are held up front, one 1-credit
// hold per email, and each email's hold is settled (or released when DNS
// could not answer) together with its usage record as it is processed.
type job struct {
	ID        string
	AccountID string
	KeyID     string
	TimeZone  string
	Test      bool
	Emails    []string
	CreatedAt time.Time
	done      chan struct{}

	mu          sync.Mutex
	status      string
	results     []Result
	charged     credits.Amount
	completedAt time.Time
}

// jobView is the data of GET /v1/verify/batch/{job_id}.
type jobView struct {
	JobID          string         `json:"job_id"`
	Status         string         `json:"status"`
	Total          int            `json:"total"`
	Processed      int            `json:"processed"`
	CreditsCharged credits.Amount `json:"credits_charged"`
	CreatedAt      time.Time      `json:"created_at"`
	CompletedAt    *time.Time     `json:"completed_at"`
	Results        []Result       `json:"results"`
}

func (j *job) view() jobView {
	j.mu.Lock()
	defer j.mu.Unlock()
	return jobView{
		JobID: j.ID, Status: j.status, Total: len(j.Emails), Processed: len(j.results),
		CreditsCharged: j.charged, CreatedAt: stamp(j.CreatedAt), CompletedAt: optStamp(j.completedAt),
		Results: append([]Result{}, j.results...),
	}
}

// jobs keeps batch jobs in memory (a restart forgets them; their
// unprocessed holds then expire after batchHoldTTL and free the funds).
// Memory is bounded by maxJobsPerAccount per account and jobTTL.
type jobs struct {
	ctx  context.Context // cancelled at shutdown
	wg   sync.WaitGroup
	ids  *id.Generator
	mu   sync.Mutex
	byID map[string]*job
}

func newJobs(ctx context.Context, now func() time.Time) *jobs {
	return &jobs{ctx: ctx, ids: id.NewGenerator(now), byID: make(map[string]*job)}
}

// drop forgets a job that was admitted but not started.
func (js *jobs) drop(id string) {
	js.mu.Lock()
	delete(js.byID, id)
	js.mu.Unlock()
}

func (js *jobs) get(accountID, jobID string) (*job, bool) {
	js.mu.Lock()
	defer js.mu.Unlock()
	j, ok := js.byID[jobID]
	if !ok || j.AccountID != accountID {
		return nil, false
	}
	return j, true
}

// admit prunes jobs that finished more than jobTTL before now and adds j
// unless its account already keeps maxJobsPerAccount jobs; then it returns
// how long until the account's oldest finished job is forgotten (0 if
// every job is still running).
func (js *jobs) admit(j *job, now time.Time) (ok bool, retryAfter time.Duration) {
	js.mu.Lock()
	defer js.mu.Unlock()
	n := 0
	retryAfter = -1
	for id, o := range js.byID {
		o.mu.Lock()
		ended := o.completedAt
		o.mu.Unlock()
		if !ended.IsZero() && !now.Before(ended.Add(jobTTL)) {
			delete(js.byID, id)
			continue
		}
		if o.AccountID == j.AccountID {
			n++
			if !ended.IsZero() {
				if left := ended.Add(jobTTL).Sub(now); retryAfter < 0 || left < retryAfter {
					retryAfter = left
				}
			}
		}
	}
	if n >= maxJobsPerAccount {
		return false, max(retryAfter, 0)
	}
	js.byID[j.ID] = j
	return true, 0
}

// Wait waits for running jobs (after the context given to newJobs ended).
func (js *jobs) Wait() { js.wg.Wait() }

// batchRequest is the body of POST /v1/verify/batch.
type batchRequest struct {
	Emails []string `json:"emails"`
}

func parseBatch(b []byte) ([]string, error) {
	var req batchRequest
	if err := jsonapi.DecodeBytes(b, &req); err != nil {
		return nil, err
	}
	if len(req.Emails) == 0 || len(req.Emails) > maxBatch {
		return nil, jsonapi.Invalidf("emails must list 1-%d addresses.", maxBatch)
	}
	out := make([]string, len(req.Emails))
	for i, e := range req.Emails {
		out[i] = normalizeEmail(e)
		if out[i] == "" || len(out[i]) > 320 {
			return nil, jsonapi.Invalidf("emails[%d] must be 1-320 characters.", i)
		}
	}
	return out, nil
}

// POST /v1/verify/batch {emails[]} → 202 {job_id, status, total}: 1 credit
// per email, all held before the job is accepted (402 or
// monthly_limit_exceeded otherwise, nothing held).
func (s *api) submitBatch(w http.ResponseWriter, r *http.Request, c caller) {
	b, _ := io.ReadAll(r.Body)
	emails, err := parseBatch(b)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	a, err := s.kl.Accounts.Get(r.Context(), c.AccountID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	j := &job{
		ID: s.jobs.ids.New("job_"), AccountID: c.AccountID, KeyID: c.KeyID, TimeZone: a.TimeZone,
		Test: c.Environment == apikey.EnvTest, Emails: emails, CreatedAt: s.now(),
		done: make(chan struct{}), status: JobProcessing,
	}
	if j.Test {
		// Test batches are free but rate-limited like live ones.
		if err := s.testTraffic(r, c); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	if ok, wait := s.jobs.admit(j, s.now()); !ok {
		msg := fmt.Sprintf("Too many batch jobs: an account keeps at most %d, each for %s after it finishes.", maxJobsPerAccount, jobTTL)
		e := httpapi.Error{Status: http.StatusTooManyRequests, Type: "rate_limit_error", Code: "too_many_jobs", Message: msg,
			RetryAfter: min(max(wait, time.Second), time.Minute)}
		errorWriter.WriteError(w, r, e)
		return
	}
	var holds []credits.Hold
	if !j.Test {
		// The submission passes the key's rate limit like any request; the
		// batch itself is priced per email by its holds.
		g, err := s.kl.Authorize(r.Context(), c.raw, keyledger.Request{Endpoint: "verify_batch_submit", Method: r.Method})
		if err != nil {
			s.jobs.drop(j.ID)
			s.fail(w, r, err)
			return
		}
		_ = g.Cancel(r.Context()) // nothing to meter for the submission itself
		holds, err = s.reserve(r.Context(), j)
		if err != nil {
			s.jobs.drop(j.ID)
			s.fail(w, r, err)
			return
		}
	}
	s.jobs.wg.Add(1)
	go func() {
		defer s.jobs.wg.Done()
		s.process(s.jobs.ctx, j, holds)
	}()
	s.ok(w, http.StatusAccepted, map[string]any{"job_id": j.ID, "status": JobProcessing, "total": len(emails)})
}

// reserve holds one credit per email, all or nothing. The holds are
// written under context.WithoutCancel: a client that disconnects cannot
// make a committed Reserve report ctx.Err() and lose its hold ID. If ctx
// ended meanwhile (the client will never learn the job ID), every hold is
// released and reserve returns ctx.Err(). On any failure, a hold whose
// outcome is unknown is learned by replaying its Reserve (same idempotency
// key) and released too, so no credit stays held until the TTL.
func (s *api) reserve(ctx context.Context, j *job) ([]credits.Hold, error) {
	one, err := s.kl.Prices.OperationCost(profiles.OpVerify, 1, 0)
	if err != nil {
		return nil, err
	}
	params := func(i int) credits.ReserveParams {
		return credits.ReserveParams{
			AccountID: j.AccountID, Amount: one, TTL: batchHoldTTL,
			Reference: j.ID, IdempotencyKey: j.ID + ":" + strconv.Itoa(i),
		}
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	holds := make([]credits.Hold, len(j.Emails))
	errs := make([]error, len(j.Emails))
	var wg sync.WaitGroup
	next := make(chan int)
	for range min(reserveWorkers, len(j.Emails)) {
		wg.Go(func() {
			for i := range next {
				holds[i], errs[i] = s.kl.Credits.Reserve(wctx, params(i))
			}
		})
	}
	for i := range j.Emails {
		next <- i
	}
	close(next)
	wg.Wait()
	err = errors.Join(errs...)
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	if err == nil {
		return holds, nil
	}
	s.recoverHolds(holds, errs, params)
	s.releaseAll(holds)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	for _, e := range errs { // report the first expected refusal as such
		if errors.Is(e, credits.ErrInsufficientFunds) || errors.Is(e, credits.ErrMonthlyLimit) {
			return nil, e
		}
	}
	return nil, err
}

// recoverHolds learns the holds of failed Reserves whose outcome is
// unknown (anything but a refusal, which writes nothing) by replaying them
// with the same idempotency key: a replay returns the committed hold, or
// writes a new one that the caller releases with the rest.
func (s *api) recoverHolds(holds []credits.Hold, errs []error, params func(int) credits.ReserveParams) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i, e := range errs {
		if e == nil || errors.Is(e, credits.ErrInsufficientFunds) || errors.Is(e, credits.ErrMonthlyLimit) {
			continue
		}
		h, err := s.kl.Credits.Reserve(ctx, params(i))
		if err != nil {
			if !errors.Is(err, credits.ErrInsufficientFunds) && !errors.Is(err, credits.ErrMonthlyLimit) {
				s.log.Warn("recovering batch hold failed", "key", params(i).IdempotencyKey, "error", err)
			}
			continue
		}
		holds[i] = h
	}
}

func (s *api) releaseAll(holds []credits.Hold) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, h := range holds {
		if h.ID == "" {
			continue
		}
		if _, err := s.kl.Credits.Release(ctx, h.ID); err != nil {
			s.log.Warn("releasing batch hold failed", "hold_id", h.ID, "error", err)
		}
	}
}

// process verifies the job's emails in order, metering and settling each
// one as it goes. At shutdown it stops and releases the holds it did not
// use.
func (s *api) process(ctx context.Context, j *job, holds []credits.Hold) {
	defer close(j.done)
	for i, email := range j.Emails {
		if ctx.Err() != nil {
			if holds != nil {
				s.releaseAll(holds[i:])
			}
			j.finish(JobCancelled, s.now())
			return
		}
		var res Result
		var charged credits.Amount
		if j.Test {
			res = testResult(email)
		} else {
			res = s.check.Verify(ctx, email)
			if res.Result != Unknown {
				s.results.Set(j.AccountID+"\x00"+email, res, resultTTL)
			}
			var err error
			charged, err = s.meterBatchItem(j, i, res, holds[i])
			if err != nil {
				s.log.Error("metering batch item failed", "job_id", j.ID, "index", i, "error", err)
				res = Result{Email: email, Result: Unknown, Reason: "internal_error"}
				s.releaseAll(holds[i : i+1]) // uncharged: free its credit now, not at the TTL
			}
		}
		j.mu.Lock()
		j.results = append(j.results, res)
		j.charged = j.charged.Add(charged)
		j.mu.Unlock()
	}
	j.finish(JobCompleted, s.now())
}

// meterBatchItem records one processed email and settles its hold with its
// cost in the same transaction (or releases it for an unknown result).
func (s *api) meterBatchItem(j *job, i int, res Result, h credits.Hold) (credits.Amount, error) {
	rec := usage.Record{
		AccountID: j.AccountID, KeyID: j.KeyID, AuthSource: "api_key", Endpoint: "verify_batch", Method: http.MethodPost,
		StatusCode: http.StatusOK, Units: 1, Cost: h.Amount, Metadata: map[string]string{"job_id": j.ID},
	}
	if res.Result == Unknown {
		rec.ErrorType, rec.ErrorMessage = "dns_unavailable", res.Reason
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mr, err := s.kl.Usage.Meter(ctx, usage.MeterParams{
		Record: rec, HoldID: h.ID, IdempotencyKey: fmt.Sprintf("%s:%d", j.ID, i), TimeZone: j.TimeZone,
	})
	return mr.Charged, err
}

func (j *job) finish(status string, at time.Time) {
	j.mu.Lock()
	j.status, j.completedAt = status, at
	j.mu.Unlock()
}

// maxWait bounds GET /v1/verify/batch/{job_id}?wait=.
const maxWait = 30 * time.Second

// GET /v1/verify/batch/{job_id}[?wait=5s]: the job's progress and results,
// free. With wait, the call returns when the job finishes or the wait
// ends, whichever is first (long polling).
func (s *api) getBatch(w http.ResponseWriter, r *http.Request, c caller) {
	j, ok := s.jobs.get(c.AccountID, r.PathValue("job_id"))
	if !ok {
		s.fail(w, r, jsonapi.ErrNotFound)
		return
	}
	if ws := r.URL.Query().Get("wait"); ws != "" {
		d, err := parseWait(ws)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-j.done:
		case <-t.C:
		case <-r.Context().Done():
		}
	}
	s.ok(w, http.StatusOK, j.view())
}

// parseWait reads a wait parameter: a Go duration from 0 to 30s.
func parseWait(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 || d > maxWait {
		return 0, jsonapi.Invalid("wait must be a duration from 0s to 30s.")
	}
	return d, nil
}
