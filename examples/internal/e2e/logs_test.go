package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// recorder is a testing.TB that records Errorf calls instead of failing.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Helper() {}

func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func TestLogsFindsEverySecretKind(t *testing.T) {
	l := &Logs{secrets: map[string]string{}}
	req, _ := http.NewRequest("POST", "http://x/v1/webhooks/razorpay", nil)
	req.Header.Set("Authorization", "Bearer forii_sk_bearerbearer")
	req.Header.Set("X-Razorpay-Signature", "5c1a0f2f9e0d4ad1")
	l.HarvestRequest(req, []byte(`{"password":"correct horse","nested":[{"razorpay_signature":"abcdef0123456789"}]}`))
	l.Harvest("response", []byte(`{"success":true,"data":{"key":"kw_live_0123456789","name":"short"},"token":"sess_0123456789"}`))
	l.Harvest("not json", []byte(`password=hunter22hunter22`))
	l.Secret("too short", "abc")
	if n := l.Secrets(); n != 6 {
		t.Fatalf("recorded %d secrets, want 6", n)
	}
	fmt.Fprintln(l, `time=... level=INFO msg=ok name=short path=/v1/x`)
	r := &recorder{TB: t}
	l.Check(r)
	if len(r.errs) != 0 {
		t.Fatalf("clean logs reported %q", r.errs)
	}
	for _, s := range []string{"forii_sk_bearerbearer", "5c1a0f2f9e0d4ad1", "correct horse", "abcdef0123456789", "kw_live_0123456789", "sess_0123456789"} {
		l := &Logs{secrets: map[string]string{}}
		l.HarvestRequest(req, []byte(`{"password":"correct horse","nested":[{"razorpay_signature":"abcdef0123456789"}]}`))
		l.Harvest("response", []byte(`{"success":true,"data":{"key":"kw_live_0123456789"},"token":"sess_0123456789"}`))
		fmt.Fprintf(l, "level=ERROR msg=failed error=%q\n", "x "+s+" y")
		r := &recorder{TB: t}
		l.Check(r)
		if len(r.errs) != 1 || !strings.Contains(r.errs[0], "secret") {
			t.Errorf("%s in the logs: reported %q", s, r.errs)
		}
	}
}
