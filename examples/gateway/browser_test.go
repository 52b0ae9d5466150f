package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/keyledger/keyledger/examples/internal/e2e"
)

// findChromium returns the path of a Chromium or Chrome binary: Debian's
// /usr/bin/chromium first, then the usual names on PATH.
func findChromium() string {
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium"
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// TestDashboardInBrowser drives the gateway's dashboard in headless
// Chromium: sign up, create a key and read it once from the page, call the
// chat completion API with it, see the request in the usage table and
// chart, revoke the key in the dashboard and see the next call fail.
// It skips when no Chromium is found unless KEYLEDGER_TEST_BROWSER is set
// (CI sets it after installing Chromium), and then fails instead. On
// failure, screenshots of the keys and usage pages are kept in a temp dir.
func TestDashboardInBrowser(t *testing.T) {
	required := os.Getenv("KEYLEDGER_TEST_BROWSER") != ""
	chromium := findChromium()
	switch {
	case chromium == "" && required:
		t.Fatal("KEYLEDGER_TEST_BROWSER is set but no Chromium was found (apt-get install -y chromium)")
	case chromium == "":
		t.Skip("no Chromium found (apt-get install -y chromium); set KEYLEDGER_TEST_BROWSER=1 to make this a failure")
	case testing.Short() && !required:
		t.Skip("browser test skipped in -short mode")
	}

	srv := e2e.Start(t, run, "-db", filepath.Join(t.TempDir(), "gw.db"))
	base := srv.URL + "/dashboard"

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 1000),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	bctx, cancelBrowser := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(cancelBrowser)
	// One deadline for the whole walk; a hung browser fails the test.
	ctx, cancel := context.WithTimeout(bctx, 90*time.Second)
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("starting %s: %v", chromium, err)
	}
	// Registered after the contexts, so it runs before they are cancelled.
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		dir, err := os.MkdirTemp("", "keyledger-dashboard-screenshots-")
		if err != nil {
			t.Logf("screenshots: %v", err)
			return
		}
		sctx, cancel := context.WithTimeout(bctx, 20*time.Second)
		defer cancel()
		for _, p := range []string{"keys", "usage"} {
			if err := chromedp.Do(sctx, chromedp.Navigate(base+"/"+p), chromedp.WaitReady(chromedp.CSS("main"))); err != nil {
				t.Logf("screenshot of %s: %v", p, err)
				continue
			}
			png, err := chromedp.Run(sctx, chromedp.FullScreenshot(90))
			if err == nil {
				err = os.WriteFile(filepath.Join(dir, p+".png"), png, 0o644)
			}
			if err != nil {
				t.Logf("screenshot of %s: %v", p, err)
			}
		}
		t.Logf("screenshots of the keys and usage pages: %s", dir)
	})

	step := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	text := func(what string, a chromedp.Action[string]) string {
		t.Helper()
		s, err := chromedp.Run(ctx, a)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return s
	}

	// Not signed in: the dashboard sends the browser to sign in; sign up
	// from there.
	step("open the dashboard",
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS(`form[action="/dashboard/signin"]`)),
		chromedp.Click(chromedp.CSS(`a[href="/dashboard/signup"]`)),
		chromedp.WaitVisible(chromedp.CSS(`form[action="/dashboard/signup"]`)),
	)
	step("sign up",
		chromedp.SendKeys(chromedp.CSS(`input[name="name"]`), "Asha Browser"),
		chromedp.SendKeys(chromedp.CSS(`input[name="email"]`), "asha.browser@example.com"),
		chromedp.SendKeys(chromedp.CSS(`input[name="password"]`), "correct horse battery"),
		chromedp.Click(chromedp.CSS(`form[action="/dashboard/signup"] button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#create-key`)),
	)

	// Create a key and read it, once, from the page. The copy button is
	// hidden without JavaScript; app.js (allowed by the CSP) shows it.
	step("create a key",
		chromedp.SendKeys(chromedp.CSS(`#create-key input[name="name"]`), "browser-key"),
		chromedp.Click(chromedp.CSS(`#create-key input[name="models"][value="forii/deepseek-v3"]`)),
		chromedp.Click(chromedp.CSS(`#create-key button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#new-key`)),
		chromedp.WaitVisible(chromedp.CSS(`button[data-copy="new-key"]`)),
	)
	key := text("read the new key", chromedp.Value(chromedp.CSS(`#new-key`)))
	if !strings.HasPrefix(key, "forii_sk_") {
		t.Fatalf("new key %q", key)
	}
	// The page came from POST → redirect → GET: reloading it creates no
	// second key and shows the secret no more.
	step("reload the new key page", chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS(`#keys`)))
	if n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#keys tbody tr").length`)); err != nil || n != 1 {
		t.Fatalf("after reloading the new key page: %d keys (%v), want 1", n, err)
	}
	if html := text("keys page", chromedp.OuterHTML(chromedp.CSS("html"))); strings.Contains(html, key) || !strings.Contains(html, "shown only once") {
		t.Fatal("the reloaded page shows the secret again, or does not say it was shown once")
	}

	chat := func() int {
		return srv.Do(t, "POST", "/inference/v1/chat/completions", key, chatBody("forii/deepseek-v3", 24, false)).Status
	}
	if st := chat(); st != http.StatusOK {
		t.Fatalf("chat completion with the new key: %d", st)
	}

	// The request shows in the usage table and in the chart.
	step("usage page", chromedp.Navigate(base+"/usage"), chromedp.WaitVisible(chromedp.CSS(`#usage-chart`)), chromedp.WaitVisible(chromedp.CSS(`#usage-table`)))
	if table := text("usage table", chromedp.Text(chromedp.CSS(`#usage-table tbody`))); !strings.Contains(table, "forii/deepseek-v3") {
		t.Fatalf("usage table: %q", table)
	}
	tallest, err := chromedp.Run(ctx, chromedp.Evaluate[float64](
		`Math.max(0, ...Array.from(document.querySelectorAll("#usage-chart rect.bar")).map(r => r.getBBox().height))`))
	if err != nil || tallest <= 0 {
		t.Fatalf("the chart draws no cost bar: %v %v", tallest, err)
	}
	// A request for a model the key may not use is refused, and recorded
	// (the key allows forii/deepseek-v3 only, so an unknown model is a 403
	// before it is a 404; inproc_refusal_test.go covers the 404).
	if st := srv.Do(t, "POST", "/inference/v1/chat/completions", key, chatBody("forii/no-such-model", 8, false)).Status; st != http.StatusForbidden {
		t.Fatalf("model outside the key's list: %d, want 403", st)
	}
	step("requests page", chromedp.Navigate(base+"/requests"), chromedp.WaitVisible(chromedp.CSS(`#requests`)))
	if rows := text("request log", chromedp.Text(chromedp.CSS(`#requests tbody`))); !strings.Contains(rows, "browser-key") || !strings.Contains(rows, "model_not_allowed") {
		t.Fatalf("request log (want the refused request too): %q", rows)
	}

	// At 390 px the keys, requests and transactions tables are stacked
	// cards: status, actions, cost and amounts are on screen, and the page
	// does not scroll sideways. A screenshot of each is kept.
	shots := os.Getenv("KEYLEDGER_SCREENSHOT_DIR")
	if shots == "" {
		shots = t.TempDir()
	}
	step("narrow screen", chromedp.EmulateViewport(390, 844))
	for _, pg := range []struct {
		name, table string
		cells       []string
	}{
		{"keys", "#keys", []string{`td[data-label="Status"] .status`, `td.actions a[href$="/rotate"]`, `td.actions a.danger`}},
		{"requests", "#requests", []string{`td[data-label="Status"]`, `td[data-label^="Cost"]`}},
		{"balance", "#transactions", []string{`td[data-label^="Amount"]`, `td[data-label="Balance after"]`}},
	} {
		step(pg.name+" at 390 px", chromedp.Navigate(base+"/"+pg.name), chromedp.WaitVisible(chromedp.CSS(pg.table)))
		cells, _ := json.Marshal(pg.cells)
		check := `(() => {
			const row = document.querySelector(` + strconv.Quote(pg.table+" tbody tr") + `);
			if (!row) return "no row";
			const vw = window.innerWidth;
			if (vw > 400) return "viewport " + vw;
			if (document.documentElement.scrollWidth > vw + 1) return "the page scrolls sideways: " + document.documentElement.scrollWidth;
			for (const sel of ` + string(cells) + `) {
				const c = row.querySelector(sel);
				if (!c) return "no " + sel;
				const r = c.getBoundingClientRect();
				if (r.width <= 0 || r.height <= 0 || r.left < 0 || r.right > vw + 1 || getComputedStyle(c).visibility === "hidden") return sel + " is off-screen: " + JSON.stringify(r);
			}
			return "ok";
		})()`
		if res := text(pg.name+" cells", chromedp.Evaluate[string](check)); res != "ok" {
			t.Fatalf("%s at 390 px: %s", pg.name, res)
		}
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(90))
		if err == nil {
			err = os.WriteFile(filepath.Join(shots, pg.name+"-390.jpg"), png, 0o644)
		}
		if err != nil || len(png) < 1000 {
			t.Fatalf("screenshot of %s at 390 px: %d bytes, %v", pg.name, len(png), err)
		}
	}
	step("wide screen", chromedp.EmulateViewport(1280, 1000))

	// Revoke through the confirmation page; the next call fails.
	step("revoke the key",
		chromedp.Navigate(base+"/keys"),
		chromedp.Click(chromedp.CSS(`#keys a.danger`)),
		chromedp.WaitVisible(chromedp.CSS(`button.danger[type="submit"]`)),
		chromedp.Click(chromedp.CSS(`button.danger[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#keys tr[data-status="revoked"]`)),
	)
	if st := chat(); st != http.StatusUnauthorized {
		t.Fatalf("chat completion with the revoked key: %d, want 401", st)
	}
}
