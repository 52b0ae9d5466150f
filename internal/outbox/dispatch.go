package outbox

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/events/webhook"
	"github.com/keyledger/keyledger/internal/netguard"
)

// Options configure a Dispatcher. Zero fields take the defaults given.
type Options struct {
	Now    func() time.Time // time.Now
	Hook   events.Hook      // none
	Logger *slog.Logger     // discard
	// Guard decides which addresses webhooks may reach (zero: public only).
	Guard netguard.Guard
	// Client sends webhooks (default: a client dialling through Guard,
	// with Timeout, no proxy, no redirects followed).
	Client  *http.Client
	Timeout time.Duration // 10 s per webhook request
	// Batch is how many events one round claims (32); Workers how many
	// accounts are delivered to at once (4).
	Batch, Workers int
	// Poll is the wait between rounds that found nothing to do (1 s).
	Poll time.Duration
	// Lease is how long a claim lasts (5 min): a dispatcher that dies
	// mid-delivery holds its events that long.
	Lease time.Duration
	// MaxAttempts before an event is given up (dead) (20). BackoffBase
	// (5 s) doubles per attempt up to BackoffMax (1 h), with jitter.
	MaxAttempts             int
	BackoffBase, BackoffMax time.Duration
	// Jitter returns a number in [0, 1) (crypto/rand if nil).
	Jitter func() float64
	// Retention keeps delivered and dead events and the delivery log for
	// this long (30 days); PruneBatch bounds one prune (500 rows).
	Retention  time.Duration
	PruneBatch int
	// ExpiryWindow: keys expiring within it get key.expiring (7 days);
	// ExpiryBatch bounds one scan (100).
	ExpiryWindow time.Duration
	ExpiryBatch  int
	// Housekeeping is the least time between two expiring-key scans and
	// between two prunes (1 min), so that an idle dispatcher polling
	// often does not write each time.
	Housekeeping time.Duration
}

// maxResponse bounds how much of a webhook response is read.
const maxResponse = 4 << 10

// Dispatcher delivers outbox events.
type Dispatcher struct {
	st   Store
	opt  Options
	wake chan struct{}

	mu                  sync.Mutex
	lastScan, lastPrune time.Time // zero: never yet
}

// New returns a Dispatcher over st.
func New(st Store, opt Options) *Dispatcher {
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	if opt.Timeout <= 0 {
		opt.Timeout = 10 * time.Second
	}
	if opt.Client == nil {
		opt.Client = GuardedClient(opt.Guard, opt.Timeout)
	}
	if opt.Batch <= 0 {
		opt.Batch = 32
	}
	if opt.Workers <= 0 {
		opt.Workers = 4
	}
	if opt.Poll <= 0 {
		opt.Poll = time.Second
	}
	if opt.Lease <= 0 {
		opt.Lease = 5 * time.Minute
	}
	if opt.MaxAttempts <= 0 {
		opt.MaxAttempts = 20
	}
	if opt.BackoffBase <= 0 {
		opt.BackoffBase = 5 * time.Second
	}
	if opt.BackoffMax <= 0 {
		opt.BackoffMax = time.Hour
	}
	if opt.Jitter == nil {
		opt.Jitter = func() float64 {
			var b [8]byte
			_, _ = rand.Read(b[:])
			return float64(binary.BigEndian.Uint64(b[:])>>11) / (1 << 53)
		}
	}
	if opt.Retention <= 0 {
		opt.Retention = 30 * 24 * time.Hour
	}
	if opt.PruneBatch <= 0 {
		opt.PruneBatch = 500
	}
	if opt.ExpiryWindow <= 0 {
		opt.ExpiryWindow = 7 * 24 * time.Hour
	}
	if opt.ExpiryBatch <= 0 {
		opt.ExpiryBatch = 100
	}
	if opt.Housekeeping <= 0 {
		opt.Housekeeping = time.Minute
	}
	return &Dispatcher{st: st, opt: opt, wake: make(chan struct{}, 1)}
}

// GuardedClient returns an HTTP client that connects only to addresses g
// allows (checked after DNS resolution, at connect time), uses no proxy,
// follows no redirect and gives up after timeout.
func GuardedClient(g netguard.Guard, timeout time.Duration) *http.Client {
	d := &net.Dialer{Timeout: timeout, Control: g.Control}
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           d.DialContext,
		TLSHandshakeTimeout:   timeout,
		ResponseHeaderTimeout: timeout,
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       30 * time.Second,
	}
	return &http.Client{
		Transport:     tr,
		Timeout:       timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Wake makes a running Run start its next round now.
func (d *Dispatcher) Wake() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Run delivers until ctx ends, then returns ctx's error. A round that
// fails (the store is down) is logged and retried after Poll.
func (d *Dispatcher) Run(ctx context.Context) error {
	for {
		n, err := d.RunOnce(ctx)
		if err != nil && ctx.Err() == nil {
			d.opt.Logger.WarnContext(ctx, "events: dispatch round failed", "error", err)
		}
		if n > 0 && err == nil {
			continue
		}
		t := time.NewTimer(d.opt.Poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-d.wake:
			t.Stop()
		case <-t.C:
		}
	}
}

// RunOnce runs one round: the expiring-key scan, one claim of due events
// and their delivery, and one prune. It returns how many events it
// claimed.
func (d *Dispatcher) RunOnce(ctx context.Context) (int, error) {
	now := d.opt.Now()
	var errs []error
	if d.due(&d.lastScan, now) {
		n, err := d.st.NoticeExpiringKeys(ctx, now, now.Add(d.opt.ExpiryWindow), d.opt.ExpiryBatch)
		if err != nil {
			errs = append(errs, fmt.Errorf("expiring keys: %w", err))
		}
		if n == d.opt.ExpiryBatch || err != nil {
			d.undue(&d.lastScan) // more to do: scan again next round
		}
	}
	var tok [12]byte
	_, _ = rand.Read(tok[:])
	claim := hex.EncodeToString(tok[:])
	ps, err := d.st.ClaimEvents(ctx, now, now.Add(d.opt.Lease), claim, d.opt.Batch)
	if err != nil {
		errs = append(errs, fmt.Errorf("claim: %w", err))
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	sem := make(chan struct{}, d.opt.Workers)
	for _, p := range ps {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := d.deliver(ctx, p); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if d.due(&d.lastPrune, now) {
		n, err := d.st.PruneEvents(ctx, now.Add(-d.opt.Retention), d.opt.PruneBatch)
		if err != nil {
			errs = append(errs, fmt.Errorf("prune: %w", err))
		}
		if n >= d.opt.PruneBatch || err != nil {
			d.undue(&d.lastPrune)
		}
	}
	return len(ps), errors.Join(errs...)
}

// due reports whether a housekeeping task last run at *last is due at
// now, and if so marks it run.
func (d *Dispatcher) due(last *time.Time, now time.Time) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !last.IsZero() && now.Sub(*last) < d.opt.Housekeeping {
		return false
	}
	*last = now
	return true
}

// undue makes a housekeeping task due again at the next round.
func (d *Dispatcher) undue(last *time.Time) {
	d.mu.Lock()
	*last = time.Time{}
	d.mu.Unlock()
}

// deliver runs one round for a claimed event: every target not yet done.
func (d *Dispatcher) deliver(ctx context.Context, p Pending) error {
	eps, err := d.st.WebhookEndpoints(ctx, p.AccountID)
	if err != nil {
		return fmt.Errorf("endpoints of %s: %w", p.AccountID, err)
	}
	body, err := json.Marshal(p.Event)
	if err != nil {
		return fmt.Errorf("event %s: %w", p.ID, err)
	}
	attempt := p.Attempts + 1
	res := Result{EventID: p.ID, Claim: p.Claim, Attempts: attempt, Done: slices.Clone(p.Done)}
	failed := false
	try := func(target string, fn func() (int, error)) {
		if slices.Contains(p.Done, target) {
			return
		}
		start := d.opt.Now()
		code, err := fn()
		end := d.opt.Now()
		l := events.Delivery{EventID: p.ID, AccountID: p.AccountID, EventType: p.Type, EndpointID: target,
			Attempt: attempt, StatusCode: code, Duration: end.Sub(start), At: end.UTC()}
		if err != nil {
			l.Error = logText(err.Error())
			failed = true
		} else {
			res.Done = append(res.Done, target)
		}
		res.Log = append(res.Log, l)
	}
	if d.opt.Hook != nil {
		try(events.HookTarget, func() (int, error) { return 0, d.callHook(ctx, p.Event) })
	}
	for _, ep := range eps {
		try(ep.ID, func() (int, error) { return d.post(ctx, ep, p.Event, body) })
	}
	now := d.opt.Now()
	switch {
	case !failed:
		res.State = StateDelivered
	case attempt >= d.opt.MaxAttempts:
		res.State = StateDead
		d.opt.Logger.WarnContext(ctx, "events: event given up", "event_id", p.ID, "account_id", p.AccountID, "attempts", attempt)
	default:
		res.State, res.NextAt = StatePending, now.Add(d.backoff(attempt))
	}
	if err := d.st.FinishEvent(ctx, now, res); err != nil {
		return fmt.Errorf("finish %s: %w", p.ID, err)
	}
	return nil
}

// maxLogError bounds a delivery-log error (bytes).
const maxLogError = 300

// logText makes an error text (a host hook's, free) storable: valid UTF-8
// without NUL, which SQL stores refuse with an error that would fail the
// event's finish on every attempt, cut to maxLogError bytes at a rune
// boundary.
func logText(s string) string {
	s = strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
	if len(s) > maxLogError {
		n := maxLogError
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		s = s[:n]
	}
	return s
}

// backoff is the wait after the attempt-th failure: BackoffBase·2^(n−1),
// at most BackoffMax, of which a random half is taken off (jitter), so
// that receivers coming back are not hit by every sender at once.
func (d *Dispatcher) backoff(attempt int) time.Duration {
	w := float64(d.opt.BackoffBase) * math.Pow(2, float64(min(attempt-1, 40)))
	w = min(w, float64(d.opt.BackoffMax))
	return time.Duration(w * (0.5 + 0.5*d.opt.Jitter()))
}

func (d *Dispatcher) callHook(ctx context.Context, e events.Event) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("hook panicked: %v", r)
		}
	}()
	return d.opt.Hook(ctx, e)
}

// post sends one webhook request and reports the status code.
func (d *Dispatcher) post(ctx context.Context, ep events.Endpoint, e events.Event, body []byte) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, d.opt.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.URL, bytes.NewReader(body))
	if err != nil {
		return 0, errors.New("invalid endpoint URL")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "keyledger-webhooks/1")
	req.Header.Set("Keyledger-Event-Id", e.ID)
	req.Header.Set("Keyledger-Event-Type", string(e.Type))
	req.Header.Set(webhook.Header, webhook.Sign(ep.Secret, d.opt.Now(), body))
	resp, err := d.opt.Client.Do(req)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return 0, errors.New("timeout")
		}
		if errors.Is(err, netguard.ErrBlocked) || isBlocked(err) {
			return 0, errors.New("address not allowed")
		}
		return 0, errors.New("connection failed")
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponse))
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, fmt.Errorf("status %d", resp.StatusCode)
	}
	return resp.StatusCode, nil
}

func isBlocked(err error) bool {
	var ae *net.AddrError
	return errors.As(err, &ae) && ae.Err == netguard.ErrBlocked.Error()
}
