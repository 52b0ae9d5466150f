package keyledger

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/netip"
	"time"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/errkind"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/internal/id"
	"github.com/keyledger/keyledger/internal/outbox"
	"github.com/keyledger/keyledger/store"
)

// EventOptions configure events and their delivery (Options.Events; nil
// means defaults). Zero fields take the defaults given.
type EventOptions struct {
	// Hook receives every event in-process, before the webhooks (none).
	Hook events.Hook
	// Allow lists address prefixes webhooks may reach although they are
	// loopback or private, over http too: for tests only.
	Allow []netip.Prefix
	// LookupIP resolves webhook hosts at create time (the system resolver).
	LookupIP func(ctx context.Context, host string) ([]netip.Addr, error)
	// Poll is the dispatcher's wait when idle (1 s); Timeout bounds one
	// webhook request (10 s).
	Poll, Timeout time.Duration
	// MaxAttempts before an event is given up (20); the wait after the
	// n-th failure is BackoffBase·2^(n−1) (5 s) up to BackoffMax (1 h),
	// less a random part of up to half.
	MaxAttempts             int
	BackoffBase, BackoffMax time.Duration
	// Retention keeps delivered events and the delivery log (30 days).
	Retention time.Duration
	// ExpiryWindow: active keys expiring within it get one key.expiring
	// event (7 days).
	ExpiryWindow time.Duration
}

// Webhooks returns the service that manages the accounts' webhook
// endpoints and low-balance alert thresholds.
func (kl *KeyLedger) Webhooks() *events.Service { return kl.webhooks }

// Dispatcher delivers the events the backends write to the outbox: at
// least once, in order per account, to the host hook and to each of the
// account's webhook endpoints (signed, see events/webhook), retrying with
// backoff. It also runs the expiring-key scan and the retention prune.
// Several instances may run it over one PostgreSQL database; on SQLite run
// one per database file.
type Dispatcher struct {
	d   *outbox.Dispatcher
	err error
}

// Dispatcher returns the event dispatcher; the host runs it with
// Dispatcher().Run(ctx) for as long as it serves.
func (kl *KeyLedger) Dispatcher() *Dispatcher { return kl.dispatch }

// ErrNoOutbox is returned by the Dispatcher over a store without an event
// outbox (every keyledger backend has one).
var ErrNoOutbox = errkind.New(errkind.Internal, "keyledger: the store has no event outbox")

// Run delivers until ctx ends and returns ctx's error.
func (d *Dispatcher) Run(ctx context.Context) error {
	if d.err != nil {
		return d.err
	}
	return d.d.Run(ctx)
}

// RunOnce runs one delivery round (tests, cron-style hosts) and returns
// how many events it claimed.
func (d *Dispatcher) RunOnce(ctx context.Context) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	return d.d.RunOnce(ctx)
}

// Wake makes a running Run start its next round now.
func (d *Dispatcher) Wake() {
	if d.d != nil {
		d.d.Wake()
	}
}

// newEvents builds the webhook service and the dispatcher, and chains the
// recharge-failure event into co (the recharge has no transaction of its
// own to write it in, so it is appended on its own). The service manages
// endpoints and thresholds through managed (the audited store); the
// dispatcher drains st's outbox.
func newEvents(st store.Store, managed events.Store, eo *EventOptions, now func() time.Time, log *slog.Logger, co *credits.Options) (*events.Service, *Dispatcher) {
	var o EventOptions
	if eo != nil {
		o = *eo
	}
	svc := events.NewService(managed, &events.Options{Now: now, Allow: o.Allow, LookupIP: o.LookupIP})
	d := &Dispatcher{}
	if ob, ok := st.(outbox.Store); ok {
		d.d = outbox.New(ob, outbox.Options{
			Now: now, Hook: o.Hook, Logger: log, Guard: svc.Guard(), Timeout: o.Timeout, Poll: o.Poll,
			MaxAttempts: o.MaxAttempts, BackoffBase: o.BackoffBase, BackoffMax: o.BackoffMax,
			Retention: o.Retention, ExpiryWindow: o.ExpiryWindow,
		})
	} else {
		d.err = ErrNoOutbox
	}
	ids := id.NewGenerator(now)
	host := co.OnRechargeError
	co.OnRechargeError = func(rr credits.RechargeRequest, err error) {
		data, _ := json.Marshal(map[string]any{"amount": rr.Amount.String(), "crossing": rr.Crossing, "error": errkind.Of(err).String()})
		ev := events.Event{ID: ids.New("evt_"), Type: events.RechargeFailed, AccountID: rr.AccountID, Time: now().UTC(), Data: data}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if aerr := st.AppendEvents(ctx, []events.Event{ev}); aerr != nil {
			log.Warn("keyledger: recharge.failed event not written", "account_id", rr.AccountID, "error", aerr)
		}
		cancel()
		if host != nil {
			host(rr, err)
		}
	}
	return svc, d
}
