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

// Batch limits. Jobs are kept in the database (ev_jobs, see jobStore):
// each account keeps at most maxJobsPerAccount jobs (about 1,000 results
// each), and a finished job is deleted jobTTL after it ended.
const (
	maxBatch          = 1000
	maxJobsPerAccount = 20
	jobTTL            = time.Hour
	batchHoldTTL      = time.Hour
	// reserveWorkers reserve a batch's holds concurrently, so that the
	// ledger's group commit writes them in few transactions.
	reserveWorkers = 16
	// jobLease is how long an instance may process a job without saving
	// it; a job whose lease ended (its instance died) is resumed by the
	// next instance that sweeps or reads it.
	jobLease = time.Minute
	// saveEvery and saveInterval bound how much progress a dead instance
	// loses: a running job is saved every saveEvery results or
	// saveInterval, whichever comes first (well within jobLease even at
	// the 2-second DNS bound).
	saveEvery    = 10
	saveInterval = 2 * time.Second
	// jobSweep is how often an instance prunes expired jobs (pruneBatch
	// rows a statement) and resumes jobs whose lease ended.
	jobSweep   = 15 * time.Second
	pruneBatch = 500
	staleBatch = 50
	// subSweepBatch is how many accounts a sweep ensures the monthly
	// grant of (see subscription.Renewer.Sweep).
	subSweepBatch = 200
)

// Job states. A job is failed only when its instance died before its
// holds were recorded (see resume).
const (
	JobProcessing = "processing"
	JobCompleted  = "completed"
	JobFailed     = "failed"
)

// job is one batch verification running in this instance. Its funds are
// held up front, one 1-credit hold per email, and each email's hold is
// settled (or released when DNS could not answer) together with its usage
// record as it is processed. Its durable state is its ev_jobs row.
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
	costs       []credits.Amount // one per result, exact
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

func (r jobRecord) view() jobView {
	res := r.Results
	if res == nil {
		res = []Result{}
	}
	return jobView{
		JobID: r.ID, Status: r.Status, Total: len(r.Emails), Processed: len(r.Results),
		CreditsCharged: r.Charged, CreatedAt: stamp(r.CreatedAt), CompletedAt: optStamp(r.FinishedAt), Results: res,
	}
}

// snapshot copies the job's progress for saving.
func (j *job) snapshot() ([]Result, []credits.Amount, credits.Amount) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]Result{}, j.results...), append([]credits.Amount{}, j.costs...), j.charged
}

// jobs runs batch jobs over the durable jobStore. local holds the jobs
// this instance is processing (for long polling); every other instance
// reads them from the store.
type jobs struct {
	ctx   context.Context // cancelled at shutdown
	wg    sync.WaitGroup
	ids   *id.Generator
	store *jobStore
	owner string // this instance, in ev_jobs.owner
	now   func() time.Time

	mu    sync.Mutex
	local map[string]*job
}

func newJobs(ctx context.Context, now func() time.Time, store *jobStore) *jobs {
	ids := id.NewGenerator(now)
	return &jobs{ctx: ctx, ids: ids, store: store, owner: ids.New("ins_"), now: now, local: make(map[string]*job)}
}

// dbctx bounds a job store call that must complete even at shutdown.
func dbctx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
}

// drop forgets a job that was admitted but not started.
func (js *jobs) drop(ctx context.Context, id string) {
	js.mu.Lock()
	delete(js.local, id)
	js.mu.Unlock()
	ctx, cancel := dbctx(ctx)
	defer cancel()
	_ = js.store.drop(ctx, id) // a leftover row is a failed job at its lease's end
}

func (js *jobs) localJob(id string) (*job, bool) {
	js.mu.Lock()
	defer js.mu.Unlock()
	j, ok := js.local[id]
	return j, ok
}

// admit stores j, leased to this instance, unless its account already
// keeps maxJobsPerAccount jobs (expired ones are deleted first); then it
// returns how long until the account's oldest finished job expires (0 if
// every job is still running).
func (js *jobs) admit(ctx context.Context, j *job) (ok bool, retryAfter time.Duration, err error) {
	now := js.now()
	ok, retryAfter, err = js.store.create(ctx, jobRecord{
		ID: j.ID, AccountID: j.AccountID, KeyID: j.KeyID, TimeZone: j.TimeZone, Test: j.Test, Status: JobProcessing,
		Emails: j.Emails, CreatedAt: j.CreatedAt, LeaseUntil: now.Add(jobLease), Owner: js.owner,
	}, now, maxJobsPerAccount)
	if err != nil || !ok {
		return ok, retryAfter, err
	}
	js.mu.Lock()
	js.local[j.ID] = j
	js.mu.Unlock()
	return true, 0, nil
}

// Wait waits for running jobs (after the context given to newJobs ended).
func (js *jobs) Wait() { js.wg.Wait() }

// start processes j in the background.
func (s *api) start(j *job, holds []credits.Hold) {
	s.jobs.mu.Lock()
	s.jobs.local[j.ID] = j
	s.jobs.mu.Unlock()
	s.jobs.wg.Add(1)
	go func() {
		defer s.jobs.wg.Done()
		s.process(s.jobs.ctx, j, holds)
	}()
}

// resume takes over the running job id if its lease ended (its instance
// died or shut down) and continues it here from its last saved result:
// the holds of its unprocessed addresses are in its row, and an address
// processed but not saved is processed again under the same metering
// idempotency key, so it is not charged twice. A live job whose instance
// died before recording its holds is marked failed with its results so
// far (none): its addresses were never charged, and whatever holds were
// written expire after batchHoldTTL.
func (s *api) resume(ctx context.Context, id string) error {
	now := s.now()
	r, ok, err := s.jobs.store.claim(ctx, id, s.jobs.owner, now, now.Add(jobLease))
	if err != nil || !ok {
		return err
	}
	j := &job{ID: r.ID, AccountID: r.AccountID, KeyID: r.KeyID, TimeZone: r.TimeZone, Test: r.Test, Emails: r.Emails,
		CreatedAt: r.CreatedAt, done: make(chan struct{}), status: JobProcessing,
		results: r.Results, costs: r.Costs, charged: r.Charged}
	if len(j.costs) != len(j.results) || len(j.results) > len(j.Emails) {
		return s.jobs.store.finish(ctx, r.ID, s.jobs.owner, JobFailed, r.Results, r.Costs, r.Charged, now)
	}
	var holds []credits.Hold
	if !r.Test {
		if len(r.Holds) != len(r.Emails) {
			s.log.Warn("batch job lost before its holds were recorded: failed", "job_id", r.ID)
			return s.jobs.store.finish(ctx, r.ID, s.jobs.owner, JobFailed, r.Results, r.Costs, r.Charged, now)
		}
		one, err := s.kl.Prices.OperationCost(profiles.OpVerify, 1, 0)
		if err != nil {
			return err
		}
		holds = make([]credits.Hold, len(r.Holds))
		for i, h := range r.Holds {
			holds[i] = credits.Hold{ID: h, AccountID: r.AccountID, Amount: one}
		}
	}
	s.log.Info("resuming batch job", "job_id", r.ID, "processed", len(r.Results), "total", len(r.Emails))
	s.start(j, holds)
	return nil
}

// sweep deletes expired jobs, pruneBatch rows a statement, resumes up to
// staleBatch jobs whose lease ended, prunes the verification cache, and
// ensures the monthly grants of the next subSweepBatch accounts. One part
// failing does not stop the others.
func (s *api) sweep(ctx context.Context) error {
	return errors.Join(s.sweepJobs(ctx), s.jobs.store.sweepResults(ctx, s.now()), s.sweepGrants(ctx))
}

func (s *api) sweepJobs(ctx context.Context) error {
	now := s.now()
	for {
		n, err := s.jobs.store.prune(ctx, now, pruneBatch)
		if err != nil {
			return err
		}
		if n < pruneBatch || ctx.Err() != nil {
			break
		}
	}
	ids, err := s.jobs.store.stale(ctx, now, staleBatch)
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range ids {
		errs = append(errs, s.resume(ctx, id))
	}
	return errors.Join(errs...)
}

// sweepGrants ensures the month's credits of the next page of accounts (a
// full pass takes accounts/subSweepBatch sweeps, then starts again), for
// the accounts not used since the month began.
func (s *api) sweepGrants(ctx context.Context) error {
	next, err := s.subs.Sweep(ctx, s.subCursor, subSweepBatch)
	s.subCursor = next
	return err
}

// sweeper sweeps at start and then every jobSweep until ctx ends.
func (s *api) sweeper(ctx context.Context) {
	t := time.NewTicker(jobSweep)
	defer t.Stop()
	for {
		if err := s.sweep(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("sweep failed", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

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
	ok, wait, err := s.jobs.admit(r.Context(), j)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if !ok {
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
			s.jobs.drop(r.Context(), j.ID)
			s.fail(w, r, err)
			return
		}
		_ = g.Cancel(r.Context()) // nothing to meter for the submission itself
		holds, err = s.reserve(r.Context(), j)
		if err != nil {
			s.jobs.drop(r.Context(), j.ID)
			s.fail(w, r, err)
			return
		}
		ctx, cancel := dbctx(r.Context())
		err = s.jobs.store.setHolds(ctx, j.ID, s.jobs.owner, holds, s.now().Add(jobLease))
		cancel()
		if err != nil {
			s.releaseAll(holds)
			s.jobs.drop(r.Context(), j.ID)
			s.fail(w, r, err)
			return
		}
	}
	s.start(j, holds)
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

// process verifies the job's emails in order from its first unprocessed
// one, metering and settling each one as it goes and saving its progress
// every saveEvery results or saveInterval. At shutdown it saves its
// progress and gives up its lease: the next instance resumes it with the
// holds it did not use. If another instance took the job over (this one
// stalled past its lease), it stops.
func (s *api) process(ctx context.Context, j *job, holds []credits.Hold) {
	defer func() {
		s.jobs.mu.Lock()
		delete(s.jobs.local, j.ID)
		s.jobs.mu.Unlock()
		close(j.done)
	}()
	// stop saves the job at shutdown and gives up its lease; the address
	// in flight, if any, stays unprocessed with its hold.
	stop := func() {
		if err := s.save(ctx, j); err == nil {
			wctx, cancel := dbctx(ctx)
			if err := s.jobs.store.unlease(wctx, j.ID, s.jobs.owner); err != nil {
				s.log.Warn("giving up batch job lease failed", "job_id", j.ID, "error", err)
			}
			cancel()
		}
	}
	saved, unsaved := s.now(), 0
	for i := len(j.results); i < len(j.Emails); i++ {
		email := j.Emails[i]
		if ctx.Err() != nil {
			stop()
			return
		}
		var res Result
		var charged credits.Amount
		if j.Test {
			res = testResult(email)
		} else {
			res = s.check.Verify(ctx, email)
			if ctx.Err() != nil { // a lookup cut short by shutdown: the next instance redoes it
				stop()
				return
			}
			if res.Result != Unknown {
				s.cacheResult(ctx, j.AccountID, email, res)
			}
			var err error
			charged, err = s.meterBatchItem(j, i, res, holds[i])
			if err != nil {
				s.log.Error("metering batch item failed", "job_id", j.ID, "index", i, "error", err)
				res = Result{Email: email, Result: Unknown, Reason: "internal_error"}
				charged = credits.Amount{}
				s.releaseAll(holds[i : i+1]) // uncharged: free its credit now, not at the TTL
			}
		}
		j.mu.Lock()
		j.results = append(j.results, res)
		j.costs = append(j.costs, charged)
		j.charged = j.charged.Add(charged)
		j.mu.Unlock()
		unsaved++
		if now := s.now(); i+1 < len(j.Emails) && (unsaved >= saveEvery || now.Sub(saved) >= saveInterval) {
			if err := s.save(ctx, j); errors.Is(err, errLeaseLost) {
				s.log.Warn("batch job taken over by another instance", "job_id", j.ID)
				return
			}
			saved, unsaved = now, 0
		}
	}
	at := s.now()
	j.finish(JobCompleted, at)
	results, costs, charged := j.snapshot()
	wctx, cancel := dbctx(ctx)
	defer cancel()
	if err := s.jobs.store.finish(wctx, j.ID, s.jobs.owner, JobCompleted, results, costs, charged, at); err != nil {
		s.log.Error("saving finished batch job failed", "job_id", j.ID, "error", err)
	}
}

// save writes j's progress and renews its lease.
func (s *api) save(ctx context.Context, j *job) error {
	results, costs, charged := j.snapshot()
	wctx, cancel := dbctx(ctx)
	defer cancel()
	err := s.jobs.store.progress(wctx, j.ID, s.jobs.owner, results, costs, charged, s.now().Add(jobLease))
	if err != nil && !errors.Is(err, errLeaseLost) {
		s.log.Warn("saving batch job progress failed", "job_id", j.ID, "error", err)
	}
	return err
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
	var wait time.Duration
	if ws := r.URL.Query().Get("wait"); ws != "" {
		d, err := parseWait(ws)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		wait = d
	}
	rec, err := s.readJob(r.Context(), c.AccountID, r.PathValue("job_id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if wait > 0 && rec.Status == JobProcessing {
		s.waitJob(r.Context(), rec.ID, wait)
		if rec, err = s.readJob(r.Context(), c.AccountID, rec.ID); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	s.ok(w, http.StatusOK, rec.view())
}

// readJob reads the account's job from the store, resuming it here if it
// is running past its lease.
func (s *api) readJob(ctx context.Context, accountID, jobID string) (jobRecord, error) {
	now := s.now()
	rec, err := s.jobs.store.get(ctx, accountID, jobID, now)
	if errors.Is(err, errJobNotFound) {
		return rec, jsonapi.ErrNotFound
	}
	if err != nil || rec.Status != JobProcessing || rec.LeaseUntil.After(now) {
		return rec, err
	}
	if err := s.resume(ctx, rec.ID); err != nil {
		s.log.Warn("resuming batch job failed", "job_id", rec.ID, "error", err)
	}
	return s.jobs.store.get(ctx, accountID, jobID, now)
}

// jobPoll is how often a long poll rereads a job another instance runs.
const jobPoll = 100 * time.Millisecond

// waitJob returns when the job id leaves JobProcessing, d passed or ctx
// ended: on the job's channel if it runs here, else by polling the store.
func (s *api) waitJob(ctx context.Context, id string, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	if j, ok := s.jobs.localJob(id); ok {
		select {
		case <-j.done:
		case <-t.C:
		case <-ctx.Done():
		}
		return
	}
	tick := time.NewTicker(jobPoll)
	defer tick.Stop()
	for {
		select {
		case <-t.C:
			return
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		var status string
		err := s.jobs.store.db.QueryRowContext(ctx, s.jobs.store.q(`SELECT status FROM ev_jobs WHERE job_id = ?`), id).Scan(&status)
		if err != nil || status != JobProcessing {
			return
		}
		if j, ok := s.jobs.localJob(id); ok { // resumed here meanwhile
			select {
			case <-j.done:
			case <-t.C:
			case <-ctx.Done():
			}
			return
		}
	}
}

// parseWait reads a wait parameter: a Go duration from 0 to 30s.
func parseWait(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 || d > maxWait {
		return 0, jsonapi.Invalid("wait must be a duration from 0s to 30s.")
	}
	return d, nil
}
