package faultproxy_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/keyledger/keyledger/internal/faultproxy"
)

// echo is a line echo server.
func echo(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String()
}

// roundTrip sends a line and reads it back within d; it reports the error.
func roundTrip(c net.Conn, r *bufio.Reader, d time.Duration) error {
	_ = c.SetDeadline(time.Now().Add(d))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return err
	}
	line, err := r.ReadString('\n')
	if err == nil && line != "ping\n" {
		return errors.New("garbled: " + line)
	}
	return err
}

func dial(t *testing.T, p *faultproxy.Proxy) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

func TestModes(t *testing.T) {
	p, err := faultproxy.Start(echo(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, r := dial(t, p)
	if err := roundTrip(c, r, 5*time.Second); err != nil {
		t.Fatalf("pass: %v", err)
	}

	// Black hole: nothing comes back, the connection stays open, and the
	// held bytes arrive when it heals.
	p.Set(faultproxy.Blackhole, 0)
	var ne net.Error
	if err := roundTrip(c, r, 200*time.Millisecond); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("black hole: %v, want a timeout", err)
	}
	p.Set(faultproxy.Pass, 0)
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if line, err := r.ReadString('\n'); err != nil || line != "ping\n" {
		t.Fatalf("healed: %q %v", line, err)
	}

	// Delay: still answered.
	p.Set(faultproxy.Delay, 10*time.Millisecond)
	if err := roundTrip(c, r, 5*time.Second); err != nil {
		t.Fatalf("delay: %v", err)
	}
	p.Set(faultproxy.Pass, 0)

	// Reset: the open connection ends.
	if n := p.Reset(); n != 1 {
		t.Fatalf("reset %d connections, want 1", n)
	}
	if err := roundTrip(c, r, 5*time.Second); err == nil {
		t.Fatal("a reset connection still answers")
	}

	// Refuse: new connections end at once — the dial itself may already
	// see the reset — and Pass serves again.
	p.Set(faultproxy.Refuse, 0)
	if c2, err := net.Dial("tcp", p.Addr()); err == nil {
		t.Cleanup(func() { c2.Close() })
		if err := roundTrip(c2, bufio.NewReader(c2), 5*time.Second); err == nil {
			t.Fatal("a refused connection answers")
		}
	}
	p.Set(faultproxy.Pass, 0)
	c3, r3 := dial(t, p)
	if err := roundTrip(c3, r3, 5*time.Second); err != nil {
		t.Fatalf("after refuse: %v", err)
	}
	if p.Accepted() != 3 {
		t.Fatalf("accepted %d, want 3", p.Accepted())
	}
}
