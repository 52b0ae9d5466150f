package errkind_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/keyledger/keyledger/errkind"
)

type typed struct{ k errkind.Kind }

func (e *typed) Error() string      { return "typed" }
func (e *typed) Kind() errkind.Kind { return e.k }

func TestNewKeepsIdentityAndMessage(t *testing.T) {
	a := errkind.New(errkind.NotFound, "pkg: not found")
	b := errkind.New(errkind.NotFound, "pkg: not found")
	if a.Error() != "pkg: not found" {
		t.Fatalf("message %q", a.Error())
	}
	if errors.Is(a, b) || errors.Is(b, a) {
		t.Fatal("two sentinels with the same text match each other")
	}
	w := fmt.Errorf("op: %w", a)
	if !errors.Is(w, a) || errors.Is(w, b) {
		t.Fatal("errors.Is through a wrap")
	}
}

func TestOf(t *testing.T) {
	nf := errkind.New(errkind.NotFound, "x: not found")
	un := errkind.New(errkind.Unavailable, "x: unavailable")
	for _, c := range []struct {
		name string
		err  error
		want errkind.Kind
	}{
		{"nil", nil, errkind.Unknown},
		{"plain", errors.New("boom"), errkind.Unknown},
		{"sentinel", nf, errkind.NotFound},
		{"wrapped", fmt.Errorf("a: %w", fmt.Errorf("b: %w", nf)), errkind.NotFound},
		{"typed", fmt.Errorf("a: %w", &typed{errkind.PaymentRequired}), errkind.PaymentRequired},
		{"first of many", fmt.Errorf("%w: %w", un, nf), errkind.Unavailable},
		{"joined, kinded second", errors.Join(errors.New("x"), nf), errkind.NotFound},
	} {
		if got := errkind.Of(c.err); got != c.want {
			t.Errorf("%s: Of = %v, want %v", c.name, got, c.want)
		}
	}
	if !errkind.Is(fmt.Errorf("w: %w", nf), errkind.NotFound) {
		t.Error("Is")
	}
}

func TestKindsNamed(t *testing.T) {
	seen := map[string]bool{}
	for _, k := range errkind.Kinds() {
		s := k.String()
		if s == "" || s == "unknown" || seen[s] {
			t.Errorf("kind %d named %q", k, s)
		}
		seen[s] = true
	}
	if s := errkind.Kind(200).String(); s != "kind(200)" {
		t.Errorf("out of range: %q", s)
	}
}

func ExampleOf() {
	ErrNoSuchWidget := errkind.New(errkind.NotFound, "widgets: no such widget")
	err := fmt.Errorf("widgets: get %q: %w", "w1", ErrNoSuchWidget)
	fmt.Println(errkind.Of(err), errors.Is(err, ErrNoSuchWidget))
	fmt.Println(errkind.Of(errors.New("connection reset")))
	// Output:
	// not_found true
	// unknown
}
