package norm

import (
	"strings"
	"testing"
)

func TestName(t *testing.T) {
	for in, want := range map[string]string{" Asha Rao ": "Asha Rao", strings.Repeat("é", 120): strings.Repeat("é", 120)} {
		if got, ok := Name(in); !ok || got != want {
			t.Errorf("Name(%q) = %q, %v", in, got, ok)
		}
	}
	for _, in := range []string{"", "  ", strings.Repeat("é", 121), "a\x00b", "a\nb", "\xff", "del\x7f"} {
		if _, ok := Name(in); ok {
			t.Errorf("Name(%q) accepted", in)
		}
	}
}

func TestMetadata(t *testing.T) {
	big := map[string]string{}
	for i := range MaxMetadataKeys + 1 {
		big[strings.Repeat("k", i+1)] = "v"
	}
	for _, m := range []map[string]string{big, {"": "v"}, {strings.Repeat("k", 65): "v"}, {"k": strings.Repeat("v", 1025)}, {"k": "\xff"}} {
		if Metadata(m) == nil {
			t.Errorf("accepted %d keys", len(m))
		}
	}
	if err := Metadata(map[string]string{"gst": "29ABCDE1234F1Z5"}); err != nil {
		t.Fatal(err)
	}
}

func TestClampLimit(t *testing.T) {
	for in, want := range map[int]int{-1: 50, 0: 50, 1: 1, 500: 500, 501: 500} {
		if got := ClampLimit(in); got != want {
			t.Errorf("ClampLimit(%d) = %d", in, got)
		}
	}
}
