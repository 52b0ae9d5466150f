package id

import (
	"sort"
	"testing"
	"time"

	"github.com/google/uuid"
)

func TestMonotonicWithFrozenClock(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	g := NewGenerator(func() time.Time { return at })
	var ids []string
	for range 10000 { // more than 4096: the sequence overflows into the next ms
		ids = append(ids, g.New("acct_"))
	}
	if !sort.StringsAreSorted(ids) {
		t.Fatal("ids are not sorted")
	}
	seen := map[string]bool{}
	for _, s := range ids {
		if seen[s] {
			t.Fatalf("duplicate %s", s)
		}
		seen[s] = true
	}
	u, err := Decode(ids[0][len("acct_"):])
	if err != nil {
		t.Fatal(err)
	}
	if u.Version() != 7 || u.Variant() != uuid.RFC4122 {
		t.Fatalf("version %d variant %v", u.Version(), u.Variant())
	}
	sec, nsec := u.Time().UnixTime()
	if got := time.Unix(sec, nsec); !got.Equal(at) {
		t.Fatalf("embedded time %v, want %v", got, at)
	}
}

func TestClockStepBack(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	g := NewGenerator(func() time.Time { return now })
	a := g.New("x_")
	now = now.Add(-time.Hour)
	if b := g.New("x_"); b <= a {
		t.Fatalf("%s not after %s", b, a)
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	for range 1000 {
		u := uuid.New()
		got, err := Decode(Encode(u))
		if err != nil || got != u {
			t.Fatalf("round trip %v -> %v (%v)", u, got, err)
		}
	}
	for _, bad := range []string{"", "short", "8zzzzzzzzzzzzzzzzzzzzzzzzz", "0000000000000000000000000u", "00000000000000000000000000x"} {
		if _, err := Decode(bad); err == nil {
			t.Errorf("Decode(%q) accepted", bad)
		}
	}
	if !Valid("acct_", NewGenerator(nil).New("acct_")) || Valid("key_", NewGenerator(nil).New("acct_")) {
		t.Fatal("Valid")
	}
}

func FuzzDecode(f *testing.F) {
	f.Add("06bz1k8m3q2x9h5v7c4n0r1t2w")
	f.Fuzz(func(t *testing.T, s string) {
		u, err := Decode(s)
		if err == nil && Encode(u) != s {
			t.Fatalf("Decode(%q) = %v, re-encodes to %q", s, u, Encode(u))
		}
	})
}

// TestRandomBitsNotReused checks that the buffered random bytes are never
// handed out twice, across several refills of the buffer.
func TestRandomBitsNotReused(t *testing.T) {
	g := NewGenerator(nil)
	seen := map[[8]byte]bool{}
	for range 1000 {
		u := g.UUID()
		var r [8]byte
		copy(r[:], u[8:])
		r[0] &= 0x3f
		if seen[r] {
			t.Fatalf("random part %x handed out twice", r)
		}
		seen[r] = true
	}
}

func BenchmarkNew(b *testing.B) {
	g := NewGenerator(nil)
	b.ReportAllocs()
	for b.Loop() {
		_ = g.New("txn_")
	}
}
