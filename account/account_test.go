package account

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/shopspring/decimal"
)

func TestSecretRedacts(t *testing.T) {
	s := Secret("hunter2-super-secret")
	var logged strings.Builder
	slog.New(slog.NewTextHandler(&logged, nil)).Info("login", "password", s)
	j, err := json.Marshal(struct{ P Secret }{s})
	if err != nil {
		t.Fatal(err)
	}
	outs := []string{
		fmt.Sprint(s), fmt.Sprintf("%v %+v %#v %s %q %x %10s", s, s, s, s, s, s, s),
		s.String(), s.GoString(), logged.String(), string(j),
		fmt.Sprintf("%v", struct{ P Secret }{s}), fmt.Sprintf("%+v", &CreateParams{Password: s}),
	}
	for _, out := range outs {
		if strings.Contains(out, "hunter2") || strings.Contains(out, "68756e746572") {
			t.Errorf("secret leaked: %s", out)
		}
	}
	if s.Reveal() != "hunter2-super-secret" {
		t.Fatal("Reveal")
	}
	var back struct{ P Secret }
	if err := json.Unmarshal([]byte(`{"P":"from client"}`), &back); err != nil || back.P.Reveal() != "from client" {
		t.Fatalf("decode: %v %q", err, back.P.Reveal())
	}
}

var testArgon = Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1, KeyLen: 32, SaltLen: 16}

func TestPasswordHash(t *testing.T) {
	h := hashPassword(testArgon, "pässword")
	if !strings.HasPrefix(h, "$argon2id$v=19$m=64,t=1,p=1$") {
		t.Fatalf("encoding %s", h)
	}
	if ok, rehash := checkPassword(h, "pässword", testArgon); !ok || rehash {
		t.Fatalf("check = %v %v", ok, rehash)
	}
	if ok, _ := checkPassword(h, "passwörd", testArgon); ok {
		t.Fatal("wrong password accepted")
	}
	other := testArgon
	other.Time = 2
	if ok, rehash := checkPassword(h, "pässword", other); !ok || !rehash {
		t.Fatalf("parameter change: ok=%v rehash=%v", ok, rehash)
	}
	if h2 := hashPassword(testArgon, "pässword"); h2 == h {
		t.Fatal("salt not random")
	}
	for _, bad := range []string{"", "$argon2i$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$a2V5", "$argon2id$v=19$m=99999999,t=1,p=1$c2FsdHNhbHRzYWx0$" + strings.Repeat("A", 43),
		"$argon2id$v=19$m=64,t=1,p=0$c2FsdHNhbHRzYWx0$" + strings.Repeat("A", 43), strings.Replace(h, "t=1", "t=01", 1)} {
		if ok, _ := checkPassword(bad, "x", testArgon); ok {
			t.Errorf("accepted %q", bad)
		}
	}
}

func FuzzParseHash(f *testing.F) {
	f.Add(hashPassword(testArgon, "x"))
	f.Add("$argon2id$v=19$m=64,t=1,p=1$$")
	f.Fuzz(func(t *testing.T, s string) {
		p, _, _, ok := parseHash(s)
		if ok && (!p.valid() || p.Time > 64) {
			t.Fatalf("accepted out-of-range parameters %+v", p)
		}
	})
}

func TestNormalizeEmail(t *testing.T) {
	good := map[string]string{" Asha@Example.COM ": "asha@example.com", "a.b+tag@sub.example.in": "a.b+tag@sub.example.in"}
	for in, want := range good {
		if got, err := NormalizeEmail(in); err != nil || got != want {
			t.Errorf("NormalizeEmail(%q) = %q, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "@", "a@", "@b.c", "a@b", "a b@c.d", "<a@b.c>", "A <a@b.c>", "a@b.c, d@e.f", "a@.b.c", "a@b.c.", "a@[1.2.3.4]", strings.Repeat("a", 250) + "@b.cd"} {
		if _, err := NormalizeEmail(bad); !errors.Is(err, ErrInvalidEmail) {
			t.Errorf("NormalizeEmail(%q) accepted", bad)
		}
	}
}

func FuzzNormalizeEmail(f *testing.F) {
	for _, s := range []string{"a@b.co", " X@Y.ORG", "\"q\"@x.y", "a@b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := NormalizeEmail(s)
		if err != nil {
			return
		}
		if again, err := NormalizeEmail(got); err != nil || again != got {
			t.Fatalf("not idempotent: %q -> %q -> %q (%v)", s, got, again, err)
		}
		if got != strings.ToLower(got) || len(got) > maxEmailLen || !strings.Contains(got, "@") {
			t.Fatalf("bad normal form %q", got)
		}
	})
}

func FuzzSessionToken(f *testing.F) {
	f.Add(string(newToken("kls_")))
	f.Add("kls_")
	f.Fuzz(func(t *testing.T, s string) {
		h, ok := hashToken("kls_", Secret(s))
		if ok && (len(s) != len("kls_")+tokenBodyLen || h == [32]byte{}) {
			t.Fatalf("accepted malformed token %q", s)
		}
	})
}

func TestCatalog(t *testing.T) {
	c := DefaultCatalog()
	free, ok := c.Plan("free")
	if !ok || c.Default().ID != "free" || free.Limits != (Limits{60, 100_000, 10_000}) || !free.SignupGrant.Equal(decimal.NewFromInt(50)) {
		t.Fatalf("free plan %+v", free)
	}
	want := map[string]Limits{"starter": {600, 1_000_000, 100_000}, "pro": {6_000, 10_000_000, 1_000_000}}
	for id, l := range want {
		if p, _ := c.Plan(id); p.Limits != l {
			t.Errorf("%s limits %+v", id, p.Limits)
		}
	}
	if p, _ := c.Plan("enterprise"); !p.Custom {
		t.Error("enterprise must be custom")
	}
	if len(c.Plans()) != 4 {
		t.Fatal("plans")
	}
	if _, err := NewCatalog("x", Plan{ID: "a"}); !errors.Is(err, ErrInvalidPlanCatalog) {
		t.Error("missing default accepted")
	}
	if _, err := NewCatalog("a", Plan{ID: "a"}, Plan{ID: "a"}); !errors.Is(err, ErrInvalidPlanCatalog) {
		t.Error("duplicate accepted")
	}
	if _, err := NewCatalog("a", Plan{ID: "a", MonthlyCap: decimal.NewFromInt(-1)}); !errors.Is(err, ErrInvalidPlanCatalog) {
		t.Error("negative cap accepted")
	}
	custom, err := NewCatalog("basic", Plan{ID: "basic", Limits: Limits{RequestsPerMinute: 10}})
	if err != nil || custom.Default().Limits.RequestsPerMinute != 10 {
		t.Fatal(custom, err)
	}
}

func TestOptionsValidation(t *testing.T) {
	if _, err := NewService(nil, &Options{Argon2: Argon2Params{Time: 1}}); !errors.Is(err, ErrInvalidOptions) {
		t.Fatalf("bad argon2: %v", err)
	}
	if _, err := NewService(nil, &Options{SessionTTL: -1}); !errors.Is(err, ErrInvalidOptions) {
		t.Fatalf("negative ttl: %v", err)
	}
}

// nopStore answers "not found" to everything; enough to observe Login's
// behaviour for unknown emails.
type nopStore struct{ Store }

func (nopStore) AccountByEmail(context.Context, string) (Account, error) {
	return Account{}, ErrNotFound
}

func TestLoginUnknownEmailDoesTheHashWork(t *testing.T) {
	s, err := NewService(nopStore{}, &Options{Argon2: testArgon})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Login(context.Background(), "ghost@example.com", "whatever1"); !errors.Is(err, ErrInvalidCredentials) {
		t.Fatalf("err = %v", err)
	}
	if s.dummyHash == "" {
		t.Fatal("unknown email returned without hashing the password against a dummy hash")
	}
}
