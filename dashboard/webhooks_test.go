package dashboard

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

// The Webhooks page: an endpoint is added (its secret shown once, then
// never again), refused addresses name the rule, thresholds are saved, and
// another account cannot delete the endpoint.
func TestWebhooksPage(t *testing.T) {
	e := newEnv(t)
	b, a := e.signup("Hooky")
	ctx := context.Background()
	r := b.mustGet("/dashboard/webhooks", http.StatusOK)
	if !strings.Contains(r.body, "No endpoints yet") || !strings.Contains(r.body, `>Webhooks</a>`) {
		t.Fatalf("empty page:\n%s", r.body)
	}
	r = b.submit("/dashboard/webhooks", "/dashboard/webhooks", url.Values{"url": {"https://169.254.169.254/latest"}})
	if r.status != http.StatusBadRequest || !strings.Contains(r.body, "metadata address") {
		t.Fatalf("metadata URL: %d\n%s", r.status, r.body)
	}
	r = b.submit("/dashboard/webhooks", "/dashboard/webhooks", url.Values{"url": {"https://93.184.216.34/hook"}, "description": {"alerts"}})
	if r.status != http.StatusSeeOther || !strings.HasPrefix(r.location, "/dashboard/webhooks/new?slot=") {
		t.Fatalf("create: %d %q\n%s", r.status, r.location, r.body)
	}
	page := b.mustGet(r.location, http.StatusOK)
	m := regexp.MustCompile(`id="new-secret" class="secret" type="text" readonly value="([^"]+)"`).FindStringSubmatch(page.body)
	if m == nil || !strings.HasPrefix(m[1], "whsec_") {
		t.Fatalf("no secret on the page:\n%s", page.body)
	}
	again := b.get(r.location)
	if again.status != http.StatusSeeOther || strings.Contains(again.body, m[1]) {
		t.Fatalf("second view of the secret page: %d %q", again.status, again.location)
	}
	list := b.mustGet("/dashboard/webhooks", http.StatusOK)
	if strings.Contains(list.body, m[1]) || !strings.Contains(list.body, "https://93.184.216.34/hook") {
		t.Fatalf("list:\n%s", list.body)
	}
	eps, err := e.kl.Webhooks().Endpoints(ctx, a.ID)
	if err != nil || len(eps) != 1 {
		t.Fatalf("endpoints %v %v", eps, err)
	}

	r = b.submit("/dashboard/webhooks", "/dashboard/webhooks/thresholds", url.Values{"thresholds": {"10, 100"}})
	if r.status != http.StatusSeeOther {
		t.Fatalf("thresholds: %d\n%s", r.status, r.body)
	}
	if th, _ := e.kl.Webhooks().AlertThresholds(ctx, a.ID); len(th) != 2 || th[0].String() != "100" {
		t.Fatalf("thresholds stored %v", th)
	}
	r = b.submit("/dashboard/webhooks", "/dashboard/webhooks/thresholds", url.Values{"thresholds": {"abc"}})
	if r.status != http.StatusBadRequest || !strings.Contains(r.body, "at most 5") {
		t.Fatalf("bad thresholds: %d\n%s", r.status, r.body)
	}

	// Another account's browser cannot delete it.
	other, _ := e.signup("Other")
	r = other.submit("/dashboard/webhooks", "/dashboard/webhooks/"+eps[0].ID+"/delete", nil)
	if eps2, _ := e.kl.Webhooks().Endpoints(ctx, a.ID); len(eps2) != 1 {
		t.Fatalf("another account deleted the endpoint (%d)", r.status)
	}
	r = b.submit("/dashboard/webhooks", "/dashboard/webhooks/"+eps[0].ID+"/delete", nil)
	if r.status != http.StatusSeeOther || r.location != "/dashboard/webhooks?done=webhook-deleted" {
		t.Fatalf("delete: %d %q", r.status, r.location)
	}
	if eps, _ := e.kl.Webhooks().Endpoints(ctx, a.ID); len(eps) != 0 {
		t.Fatalf("after delete: %v", eps)
	}
}
