// Package faultproxy is a TCP proxy for fault tests: it forwards
// connections to one target (PostgreSQL, Redis) and, on command, refuses
// them, delays them, black-holes them or resets them, the way a network or
// a restarting server would. Tests put one in front of each service an
// instance talks to and attack the instance through it.
//
// Modes apply to new and to open connections alike:
//
//   - Pass forwards everything.
//   - Delay forwards every chunk after a pause (a slow network or server).
//   - Blackhole accepts connections and holds every byte in either
//     direction without an answer (a partition: TCP sees nothing wrong).
//     When the mode returns to Pass the held bytes flow on, as after a
//     healed partition.
//   - Refuse resets new connections at once (the server is down).
//
// Reset ends every open connection with a TCP reset (a server restart or a
// killed backend); Refuse plus Reset is a server that went down.
package faultproxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Mode is how the proxy treats traffic.
type Mode uint8

// Modes.
const (
	Pass Mode = iota
	Delay
	Blackhole
	Refuse
)

func (m Mode) String() string {
	switch m {
	case Pass:
		return "pass"
	case Delay:
		return "delay"
	case Blackhole:
		return "blackhole"
	case Refuse:
		return "refuse"
	}
	return "mode?"
}

// ErrClosed is returned by calls on a closed Proxy.
var ErrClosed = errors.New("faultproxy: closed")

// Proxy forwards connections from its address to a target.
type Proxy struct {
	ln     net.Listener
	target string

	mu      sync.Mutex
	mode    Mode
	delay   time.Duration
	changed chan struct{} // closed and replaced at every mode change
	conns   map[*pair]struct{}
	closed  bool

	accepted, resets atomic.Int64
	wg               sync.WaitGroup
}

// pair is one proxied connection.
type pair struct {
	client, server net.Conn
	once           sync.Once
}

// Start listens on a free loopback port and forwards to target (host:port).
func Start(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, changed: make(chan struct{}), conns: map[*pair]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Accepted is the number of connections accepted so far.
func (p *Proxy) Accepted() int64 { return p.accepted.Load() }

// Open is the number of connections open now.
func (p *Proxy) Open() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Set changes the mode; d is the pause of Delay (ignored otherwise).
func (p *Proxy) Set(m Mode, d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mode, p.delay = m, d
	close(p.changed)
	p.changed = make(chan struct{})
}

// Mode returns the current mode.
func (p *Proxy) Mode() Mode {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode
}

// Reset ends every open connection with a TCP reset and returns how many
// there were.
func (p *Proxy) Reset() int {
	p.mu.Lock()
	all := make([]*pair, 0, len(p.conns))
	for c := range p.conns {
		all = append(all, c)
	}
	p.mu.Unlock()
	for _, c := range all {
		p.kill(c)
	}
	p.resets.Add(int64(len(all)))
	return len(all)
}

// Close stops the proxy and resets every connection.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrClosed
	}
	p.closed = true
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
	err := p.ln.Close()
	p.Reset()
	p.wg.Wait()
	return err
}

// state returns the mode, the delay and the channel closed at the next
// change.
func (p *Proxy) state() (Mode, time.Duration, <-chan struct{}, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode, p.delay, p.changed, p.closed
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.accepted.Add(1)
		p.wg.Add(1)
		go p.serve(c)
	}
}

// abort closes c with a TCP reset.
func abort(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

func (p *Proxy) kill(c *pair) {
	c.once.Do(func() {
		// serve sets c.server under p.mu, and only while c is in p.conns:
		// once deleted here, a server connection dialled later is aborted
		// by serve itself.
		p.mu.Lock()
		server := c.server
		delete(p.conns, c)
		p.mu.Unlock()
		abort(c.client)
		if server != nil {
			abort(server)
		}
	})
}

func (p *Proxy) serve(client net.Conn) {
	defer p.wg.Done()
	c := &pair{client: client}
	p.mu.Lock()
	if p.closed || p.mode == Refuse {
		p.mu.Unlock()
		abort(client)
		return
	}
	p.conns[c] = struct{}{}
	p.mu.Unlock()
	defer p.kill(c)
	// A black-holed connection is accepted but not forwarded until the
	// partition heals.
	for {
		m, _, changed, closed := p.state()
		if closed || m == Refuse {
			return
		}
		if m != Blackhole {
			break
		}
		<-changed
	}
	server, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		return
	}
	p.mu.Lock()
	if _, ok := p.conns[c]; !ok { // reset while dialling
		p.mu.Unlock()
		abort(server)
		return
	}
	c.server = server
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { p.pipe(server, client); done <- struct{}{} }()
	go func() { p.pipe(client, server); done <- struct{}{} }()
	<-done // either side ended: end both
}

// pipe copies src to dst chunk by chunk, honouring the mode before each
// chunk is written.
func (p *Proxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.gate() {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				if tc, ok := dst.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
				}
			}
			return
		}
	}
}

// gate waits until a chunk may pass: at once in Pass, after the pause in
// Delay, when the partition heals in Blackhole; false if the connection
// must end (Refuse, or the proxy closed).
func (p *Proxy) gate() bool {
	for {
		m, d, changed, closed := p.state()
		switch {
		case closed:
			return false
		case m == Pass:
			return true
		case m == Delay:
			t := time.NewTimer(d)
			select {
			case <-t.C:
				return true
			case <-changed:
				t.Stop()
			}
		case m == Blackhole:
			<-changed
		case m == Refuse:
			// A server that went down: open connections end too (Reset
			// does it at once; this catches the next byte).
			return false
		}
	}
}
