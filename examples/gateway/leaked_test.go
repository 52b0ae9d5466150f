package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyledger/keyledger/examples/internal/ghscan"
)

// Unsigned leaked-key reports are throttled per address: 1000 tokens an
// hour, so one address cannot make the gateway do unbounded lookups.
func TestLeakedKeysThrottled(t *testing.T) {
	g := newInproc(t, io.Discard)
	report := func(n int) []byte {
		toks := make([]map[string]string, n)
		for i := range toks {
			toks[i] = map[string]string{"token": fmt.Sprintf("forii_not_a_key_%d", i), "type": "forii_api_key", "url": "https://github.com/x/y"}
		}
		b, _ := json.Marshal(toks)
		return b
	}
	if rec := g.serve("POST", "/v1/leaked-keys", "", "", report(600)); rec.Code != 200 {
		t.Fatalf("first report: %d %s", rec.Code, rec.Body)
	}
	rec := g.serve("POST", "/v1/leaked-keys", "", "", report(600))
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") == "" || !strings.Contains(rec.Body.String(), "1000 leaked-key tokens per hour") {
		t.Fatalf("second report: %d %v %s", rec.Code, rec.Header(), rec.Body)
	}
	if rec := g.serve("POST", "/v1/leaked-keys", "", "", report(300)); rec.Code != 200 {
		t.Fatalf("a report within the rest of the budget: %d %s", rec.Code, rec.Body)
	}
}

// With -github-keys, a report must carry GitHub's signature; a correctly
// signed one disables the leaked key. The key pair is made here.
func TestLeakedKeysNeedGitHubSignature(t *testing.T) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	doc, _ := json.Marshal(map[string]any{"public_keys": []map[string]any{{
		"key_identifier": "gh-test-key", "is_current": true,
		"key": string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})),
	}}})
	keys := filepath.Join(t.TempDir(), "github-keys.json")
	if err := os.WriteFile(keys, doc, 0o600); err != nil {
		t.Fatal(err)
	}
	g := startGateway(t, "-github-keys", keys)
	u := g.signup("Leaky")
	body, _ := json.Marshal([]map[string]string{{"token": u.key, "type": "forii_api_key", "url": "https://github.com/x/y", "source": "content"}})
	post := func(headers ...string) (int, []byte) {
		req, _ := http.NewRequest("POST", g.base+"/v1/leaked-keys", strings.NewReader(string(body)))
		req.Header.Set("Content-Type", "application/json")
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		resp, err := g.c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	if st, b := post(); st != 401 || !strings.Contains(string(b), "signed by GitHub") {
		t.Fatalf("unsigned report: %d %s", st, b)
	}
	sum := sha256.Sum256(body)
	sig, _ := ecdsa.SignASN1(rand.Reader, priv, sum[:])
	good := base64.StdEncoding.EncodeToString(sig)
	other := sha256.Sum256([]byte("another body"))
	bad, _ := ecdsa.SignASN1(rand.Reader, priv, other[:])
	if st, b := post(ghscan.HeaderKeyID, "gh-test-key", ghscan.HeaderSignature, base64.StdEncoding.EncodeToString(bad)); st != 401 {
		t.Fatalf("wrong signature: %d %s", st, b)
	}
	if st, b := post(ghscan.HeaderKeyID, "unknown-key", ghscan.HeaderSignature, good); st != 401 {
		t.Fatalf("unknown key id: %d %s", st, b)
	}
	// The key still works: nothing was disabled by the refused reports.
	g.must(200, "GET", "/inference/v1/models", u.key, nil)
	st, b := post(ghscan.HeaderKeyID, "gh-test-key", ghscan.HeaderSignature, good)
	if st != 200 || !strings.Contains(string(b), "true_positive") {
		t.Fatalf("signed report: %d %s", st, b)
	}
	g.must(401, "GET", "/inference/v1/models", u.key, nil)
}
