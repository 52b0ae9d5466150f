package webhook_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/keyledger/keyledger/events/webhook"
)

func TestVerify(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	body := []byte(`{"id":"evt_1","type":"balance.low"}`)
	good := webhook.Sign("whsec_a", now, body)
	cases := []struct {
		name   string
		secret string
		header string
		body   []byte
		at     time.Time
		want   error
	}{
		{"good", "whsec_a", good, body, now, nil},
		{"good within tolerance", "whsec_a", good, body, now.Add(4 * time.Minute), nil},
		{"bad secret", "whsec_b", good, body, now, webhook.ErrBadSignature},
		{"tampered body", "whsec_a", good, []byte(`{"id":"evt_1","type":"balance.lox"}`), now, webhook.ErrBadSignature},
		{"old timestamp", "whsec_a", good, body, now.Add(6 * time.Minute), webhook.ErrTooOld},
		{"future timestamp", "whsec_a", good, body, now.Add(-6 * time.Minute), webhook.ErrTooOld},
		{"tampered timestamp", "whsec_a", strings.Replace(good, "t=1800000000", "t=1800000001", 1), body, now, webhook.ErrBadSignature},
		{"second v1 matches", "whsec_a", good + ",v1=" + strings.Repeat("00", 32), body, now, nil},
		{"empty", "whsec_a", "", body, now, webhook.ErrMalformedHeader},
		{"no t", "whsec_a", "v1=" + strings.Repeat("ab", 32), body, now, webhook.ErrMalformedHeader},
		{"no v1", "whsec_a", "t=1800000000", body, now, webhook.ErrNoSignature},
		{"short v1", "whsec_a", "t=1800000000,v1=abcd", body, now, webhook.ErrMalformedHeader},
		{"non-hex v1", "whsec_a", "t=1800000000,v1=" + strings.Repeat("zz", 32), body, now, webhook.ErrMalformedHeader},
		{"bad t", "whsec_a", "t=abc,v1=" + strings.Repeat("ab", 32), body, now, webhook.ErrMalformedHeader},
		{"negative t", "whsec_a", "t=-5,v1=" + strings.Repeat("ab", 32), body, now, webhook.ErrMalformedHeader},
		{"two t", "whsec_a", "t=1,t=2,v1=" + strings.Repeat("ab", 32), body, now, webhook.ErrMalformedHeader},
		{"no equals", "whsec_a", "garbage", body, now, webhook.ErrMalformedHeader},
		{"huge", "whsec_a", good + "," + strings.Repeat("x=y,", 2000), body, now, webhook.ErrMalformedHeader},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := webhook.Verify(c.secret, c.header, c.body, c.at, 0)
			if !errors.Is(err, c.want) || (c.want == nil && err != nil) {
				t.Fatalf("Verify = %v, want %v", err, c.want)
			}
		})
	}
}

func FuzzParseHeader(f *testing.F) {
	f.Add(webhook.Sign("s", time.Unix(1, 0), []byte("b")))
	f.Add("t=1,v1=00")
	f.Add("")
	f.Add(",,,=")
	f.Fuzz(func(t *testing.T, h string) {
		s, err := webhook.ParseHeader(h)
		if err != nil {
			return
		}
		if s.Timestamp < 0 || len(s.V1) == 0 {
			t.Fatalf("accepted %q as %+v", h, s)
		}
		for _, v := range s.V1 {
			if len(v) != 32 {
				t.Fatalf("accepted a %d-byte signature", len(v))
			}
		}
		_ = webhook.Verify("s", h, nil, time.Unix(s.Timestamp, 0), time.Second)
	})
}

func ExampleVerify() {
	secret := "whsec_example" // shown once when the endpoint was created
	body := []byte(`{"id":"evt_01","type":"key.leaked"}`)
	sent := time.Unix(1_800_000_000, 0)
	header := webhook.Sign(secret, sent, body) // what keyledger sends

	// In the receiver's handler: the raw body and r.Header.Get(webhook.Header).
	fmt.Println(webhook.Verify(secret, header, body, sent.Add(30*time.Second), 5*time.Minute))
	fmt.Println(webhook.Verify("wrong", header, body, sent, 0))
	// Output:
	// <nil>
	// webhook: signature does not match
}
