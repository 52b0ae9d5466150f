package apikey

import (
	"testing"
	"time"
)

func TestMonoClockFollowsWallClock(t *testing.T) {
	c := newMonoClock()
	for range 1000 {
		before := time.Now().UnixNano()
		n := c.nanos()
		after := time.Now().UnixNano()
		// Wall and monotonic clocks may disagree by NTP slew; a
		// millisecond is far above that over one second.
		if n < before-int64(time.Millisecond) || n > after+int64(time.Millisecond) {
			t.Fatalf("monoClock %d outside [%d, %d]", n, before, after)
		}
	}
	// An anchor older than a second is renewed from the wall clock.
	old := time.Now().Add(-2 * time.Second)
	c.anchor.Store(&old)
	before := time.Now().UnixNano()
	if n := c.nanos(); n < before {
		t.Fatalf("stale anchor not renewed: %d < %d", n, before)
	}
	if a := c.anchor.Load(); time.Since(*a) >= time.Second {
		t.Fatal("anchor not replaced")
	}
}
