package pgstore

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/keyledger/keyledger/apikey"
)

// Cross-process invalidation.
//
// Every transaction that revokes, disables, expires, updates or rotates a
// key runs pg_notify(channel, key ID); one that changes an account runs
// pg_notify(channel_accounts, account ID). PostgreSQL delivers them to every
// listening session when the transaction commits (and never if it rolls
// back). A db starts its listener with the first WatchKeyChanges: a
// dedicated connection (not from the pool) that LISTENs on both channels
// and waits for notifications, and passes them to the subscribers —
// apikey.Service drops the key from its verify cache and cancels contexts
// bound to it. Delivery takes milliseconds; the tests assert that a
// revocation in one process fails Verify in another within 1 second.
//
// A connection can also die without an error (a partition, a server gone
// without a reset): after ListenerPing without a notification the listener
// pings it, bounded by TxTimeout, and reconnects if it does not answer.
//
// If the listener's connection drops, notifications sent meanwhile are
// lost: the listener reconnects with exponential backoff (ReconnectMin to
// ReconnectMax) and, after each successful LISTEN — the first one
// included — reports apikey.Change{All: true}, so that subscribers read
// everything again. Until it is back, caches fall back to
// apikey.Options.RefreshInterval.

var _ apikey.ChangeNotifier = (*db)(nil)

// accountChannel is the channel of account changes.
func (s *db) accountChannel() string { return s.opt.NotifyChannel + "_accounts" }

// notifyKey announces a change of a key in tx; it is delivered at commit.
func (s *db) notifyKey(ctx context.Context, tx pgx.Tx, keyID string) error {
	_, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, s.opt.NotifyChannel, keyID)
	return wrap("notify key change", err)
}

// notifyAccount announces a change of an account in tx.
func (s *db) notifyAccount(ctx context.Context, tx pgx.Tx, accountID string) error {
	_, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, s.accountChannel(), accountID)
	return wrap("notify account change", err)
}

// WatchKeyChanges implements apikey.ChangeNotifier. The first call starts
// the listener; it runs until Close. On a closed db it does nothing.
func (s *db) WatchKeyChanges(fn func(apikey.Change)) (stop func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return func() {}
	}
	if s.lis == nil {
		s.lis = s.startListener()
	}
	return s.lis.add(fn)
}

// listener is the LISTEN connection and its subscribers.
type listener struct {
	s      *db
	cancel context.CancelFunc
	done   chan struct{}

	mu   sync.Mutex
	subs map[int]func(apikey.Change)
	next int

	connects  atomic.Int64  // successful LISTENs
	pid       atomic.Uint32 // backend PID of the current connection, 0 when down
	connected atomic.Bool
}

func (s *db) startListener() *listener {
	ctx, cancel := context.WithCancel(context.Background())
	l := &listener{s: s, cancel: cancel, done: make(chan struct{}), subs: make(map[int]func(apikey.Change))}
	go l.run(ctx)
	return l
}

func (l *listener) add(fn func(apikey.Change)) func() {
	l.mu.Lock()
	id := l.next
	l.next++
	l.subs[id] = fn
	l.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			delete(l.subs, id)
			l.mu.Unlock()
		})
	}
}

func (l *listener) publish(c apikey.Change) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, fn := range l.subs {
		fn(c)
	}
}

func (l *listener) stop() {
	l.cancel()
	<-l.done
}

// run keeps a listening connection until ctx ends.
func (l *listener) run(ctx context.Context) {
	defer close(l.done)
	o := &l.s.opt
	backoff := o.ReconnectMin
	for {
		err := l.listen(ctx)
		if ctx.Err() != nil {
			return
		}
		if l.connected.Swap(false) {
			backoff = o.ReconnectMin // it worked for a while: start the backoff again
		}
		l.pid.Store(0)
		l.s.log.Warn("pgstore: change listener disconnected; reconnecting", "error", err, "in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, o.ReconnectMax)
	}
}

// listen connects, LISTENs, reports Change{All} and then relays
// notifications until the connection fails or ctx ends.
func (l *listener) listen(ctx context.Context) error {
	cfg := l.s.cfg.ConnConfig.Copy()
	if cfg.RuntimeParams["application_name"] == "" {
		cfg.RuntimeParams["application_name"] = "keyledger-listener"
	}
	// Connecting and subscribing are bounded like a transaction: a server
	// that accepts the connection but never answers must not hold the
	// listener forever.
	cctx, cancel := context.WithTimeout(ctx, l.s.opt.TxTimeout)
	defer cancel()
	conn, err := pgx.ConnectConfig(cctx, cfg)
	if err != nil {
		return err
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		conn.Close(closeCtx)
	}()
	keys, accts := l.s.opt.NotifyChannel, l.s.accountChannel()
	if _, err := conn.Exec(cctx, `LISTEN `+pgx.Identifier{keys}.Sanitize()+`; LISTEN `+pgx.Identifier{accts}.Sanitize()); err != nil {
		return err
	}
	cancel()
	l.pid.Store(conn.PgConn().PID())
	l.connected.Store(true)
	l.connects.Add(1)
	// Whatever was committed before LISTEN took effect was not delivered.
	l.publish(apikey.Change{All: true})
	for {
		n, err := l.wait(ctx, conn)
		if err != nil {
			return err
		}
		if n == nil {
			continue // idle, and the connection answered its ping
		}
		switch n.Channel {
		case keys:
			l.publish(apikey.Change{KeyID: n.Payload})
		case accts:
			l.publish(apikey.Change{AccountID: n.Payload})
		}
	}
}

// wait waits for a notification for up to ListenerPing; if none comes it
// pings the connection and returns nil, nil when it answered. An error
// means the connection is gone.
func (l *listener) wait(ctx context.Context, conn *pgx.Conn) (*pgconn.Notification, error) {
	o := &l.s.opt
	wctx, cancel := context.WithTimeout(ctx, o.ListenerPing)
	n, err := conn.WaitForNotification(wctx)
	cancel()
	if err == nil || ctx.Err() != nil || wctx.Err() == nil {
		return n, err
	}
	// Idle: a read deadline passed, which leaves the connection usable.
	pctx, cancel := context.WithTimeout(ctx, o.TxTimeout)
	defer cancel()
	if err := conn.Ping(pctx); err != nil {
		return nil, err
	}
	return nil, nil
}
