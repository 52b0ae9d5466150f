package jsonapi

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

func TestDecodeBytes(t *testing.T) {
	type body struct {
		Name string `json:"name"`
		N    int    `json:"n"`
	}
	for _, c := range []struct {
		in   string
		want int
	}{
		{`{"name":"a","n":1}`, 0},
		{``, 400},
		{`  `, 400},
		{`{"name":1}`, 400},
		{`{"x":1}`, 400},
		{`{"name":"a"} {}`, 400},
		{`{"name":"a"} x`, 400},
		{`[1]`, 400},
		{`{`, 400},
		{strings.Repeat(" ", MaxBody+1), 413},
	} {
		var b body
		err := DecodeBytes([]byte(c.in), &b)
		got := 0
		if err != nil {
			got = Classify(err).Status
		}
		if got != c.want {
			t.Errorf("%.40q: status %d, want %d (%v)", c.in, got, c.want, err)
		}
	}
}

func TestClassify(t *testing.T) {
	for err, want := range map[error]int{
		ErrNotFound:                      http.StatusNotFound,
		fmt.Errorf("x: %w", ErrConflict): http.StatusConflict,
		Invalid("bad"):                   http.StatusBadRequest,
		ErrTooLarge:                      http.StatusRequestEntityTooLarge,
		errors.New("boom"):               http.StatusInternalServerError,
	} {
		if e := Classify(err); e.Status != want || e.Message == "" {
			t.Errorf("%v: %+v", err, e)
		}
	}
	if e := Classify(Invalid("public text")); e.Message != "public text" {
		t.Errorf("message %q", e.Message)
	}
}

func FuzzDecodeBytes(f *testing.F) {
	for _, s := range []string{`{"name":"a"}`, `{"name":"a"}{}`, `nul`, `{"n":1e400}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var v struct {
			Name string  `json:"name"`
			N    float64 `json:"n"`
		}
		if err := DecodeBytes(b, &v); err != nil {
			if s := Classify(err).Status; s != 400 && s != 413 {
				t.Fatalf("status %d for %q", s, b)
			}
		}
	})
}
