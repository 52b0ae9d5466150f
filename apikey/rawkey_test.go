package apikey_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/keyledger/keyledger/apikey"
)

func TestRawKeyRedacts(t *testing.T) {
	const secret = "kl_live_SECRETSECRETSECRETSECRETSECRET1234"
	raw := apikey.RawKey(secret)
	holder := struct {
		Key  apikey.RawKey
		Keys []apikey.RawKey
	}{raw, []apikey.RawKey{raw}}
	var out []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%10.3s"} {
		out = append(out, fmt.Sprintf(verb, raw), fmt.Sprintf(verb, holder))
	}
	out = append(out, fmt.Sprint(raw), fmt.Sprintln(holder), raw.String(), raw.GoString())
	j, err := json.Marshal(holder)
	if err != nil {
		t.Fatal(err)
	}
	out = append(out, string(j))
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "key", raw, "holder", holder)
	slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "key", raw)
	out = append(out, buf.String())
	for _, s := range out {
		if strings.Contains(s, "SECRET") {
			t.Fatalf("raw key leaked: %s", s)
		}
	}
	if raw.Reveal() != secret {
		t.Fatal("Reveal lost the key")
	}
	var back apikey.RawKey
	if err := json.Unmarshal([]byte(`"`+secret+`"`), &back); err != nil || back.Reveal() != secret {
		t.Fatalf("decode: %v", err)
	}
}
