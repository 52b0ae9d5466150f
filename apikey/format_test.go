package apikey

import (
	"crypto/rand"
	"errors"
	"hash/crc32"
	"strings"
	"testing"
)

func foriiFormat(t testing.TB) *Format {
	t.Helper()
	f, err := NewFormat(FormatConfig{HintChars: 6, Types: []KeyType{
		{Name: "sdk", Prefix: "forii_sk_"},
		{Name: "api", Prefix: "forii_"},
		{Name: "test", Prefix: "kw_test_", Environment: EnvTest},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestChecksumIsCRC32(t *testing.T) {
	f := DefaultFormat()
	var b [100]byte
	for n := range len(b) {
		_, _ = rand.Read(b[:n])
		if got, want := f.checksum(string(b[:n])), crc32.ChecksumIEEE(b[:n]); got != want {
			t.Fatalf("len %d: checksum %08x, crc32 %08x", n, got, want)
		}
	}
}

func TestGenerateAndParse(t *testing.T) {
	f := foriiFormat(t)
	seen := map[RawKey]bool{}
	for _, typ := range []string{"sdk", "api", "test", ""} {
		for range 100 {
			raw, err := f.Generate(typ)
			if err != nil {
				t.Fatal(err)
			}
			if seen[raw] {
				t.Fatal("duplicate key")
			}
			seen[raw] = true
			p, err := f.Parse(raw)
			if err != nil {
				t.Fatalf("Parse(generated %s key): %v", typ, err)
			}
			want := typ
			if want == "" {
				want = "sdk"
			}
			if p.Type.Name != want || !strings.HasPrefix(string(raw), p.Hint) || len(p.Hint) != len(p.Type.Prefix)+6 {
				t.Fatalf("parsed %+v", p)
			}
			body := string(raw)[len(p.Type.Prefix):]
			if strings.Trim(body, base62) != "" || len(body) != BodyLen+ChecksumLen {
				t.Fatalf("body %q", body)
			}
		}
	}
	if _, err := f.Generate("nope"); !errors.Is(err, ErrInvalidType) {
		t.Fatalf("Generate unknown type: %v", err)
	}
}

// TestEverySingleCharacterChangeIsRejected: a CRC32 detects every error
// burst of up to 32 bits, so each one-character typo fails Parse.
func TestEverySingleCharacterChangeIsRejected(t *testing.T) {
	f := foriiFormat(t)
	raw, _ := f.Generate("sdk")
	b := []byte(raw)
	for i := range b {
		orig := b[i]
		for c := 0; c < 256; c++ {
			if byte(c) == orig {
				continue
			}
			b[i] = byte(c)
			if _, err := f.Parse(RawKey(b)); err == nil {
				t.Fatalf("key with byte %d changed to %q parsed", i, byte(c))
			}
		}
		b[i] = orig
	}
}

func TestParseRejects(t *testing.T) {
	f := foriiFormat(t)
	sdk, _ := f.Generate("sdk")
	api, _ := f.Generate("api")
	s, a := string(sdk), string(api)
	cases := map[string]string{
		"empty":                 "",
		"prefix only":           "forii_sk_",
		"unknown prefix":        "sk_" + s[len("forii_sk_"):],
		"one short":             s[:len(s)-1],
		"one long":              s + "0",
		"upper-cased prefix":    "FORII_SK_" + s[len("forii_sk_"):],
		"sdk body as api key":   "forii_" + s[len("forii_sk_"):], // right length for forii_, checksum covers the prefix
		"api body as sdk key":   "forii_sk_" + a[len("forii_"):],
		"dash in body":          s[:12] + "-" + s[13:],
		"non-ASCII":             s[:len(s)-2] + "é",
		"whitespace":            " " + s[:len(s)-1],
		"checksum of other key": s[:len(s)-ChecksumLen] + a[len(a)-ChecksumLen:],
	}
	for name, k := range cases {
		if _, err := f.Parse(RawKey(k)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: Parse = %v, want ErrMalformed", name, err)
		}
	}
}

func TestNewFormatValidation(t *testing.T) {
	bad := []FormatConfig{
		{},
		{Types: []KeyType{{Name: "a", Prefix: ""}}},
		{Types: []KeyType{{Name: "a", Prefix: "has space_"}}},
		{Types: []KeyType{{Name: "a", Prefix: strings.Repeat("x", MaxPrefixLen+1)}}},
		{Types: []KeyType{{Name: "", Prefix: "a_"}}},
		{Types: []KeyType{{Name: "a", Prefix: "a_", Environment: "staging"}}},
		{Types: []KeyType{{Name: "a", Prefix: "a_"}, {Name: "a", Prefix: "b_"}}},
		{Types: []KeyType{{Name: "a", Prefix: "a_"}, {Name: "b", Prefix: "a_"}}},
		{Types: []KeyType{{Name: "a", Prefix: "a_"}}, HintChars: 3},
		{Types: []KeyType{{Name: "a", Prefix: "a_"}}, HintChars: 7},
	}
	for i, c := range bad {
		if _, err := NewFormat(c); !errors.Is(err, ErrInvalidFormat) {
			t.Errorf("case %d: %v, want ErrInvalidFormat", i, err)
		}
	}
	f, err := NewFormat(FormatConfig{Types: []KeyType{{Name: "only", Prefix: "or_"}}})
	if err != nil {
		t.Fatal(err)
	}
	if ts := f.Types(); len(ts) != 1 || ts[0].Environment != EnvLive || f.HintChars() != 4 {
		t.Fatalf("defaults: %+v hint %d", ts, f.HintChars())
	}
}

// FuzzParse: Parse never panics; what it accepts is exactly one type's
// prefix, a base62 body and the base62 CRC32 of prefix and body, and it
// rejects the same key with any one byte changed.
func FuzzParse(f *testing.F) {
	format := foriiFormat(f)
	for _, typ := range []string{"sdk", "api", "test"} {
		k, _ := format.Generate(typ)
		f.Add(string(k), uint8(3))
	}
	f.Add("", uint8(0))
	f.Add("forii_sk_", uint8(1))
	f.Add("forii_sk_0000000000000000000000000000000000", uint8(9))
	f.Add("kw_test_\xff\xfe", uint8(2))
	f.Fuzz(func(t *testing.T, s string, pos uint8) {
		p, err := format.Parse(RawKey(s))
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse error %v is not ErrMalformed", err)
			}
			return
		}
		pre := p.Type.Prefix
		if !strings.HasPrefix(s, pre) || len(s) != len(pre)+BodyLen+ChecksumLen || !strings.HasPrefix(s, p.Hint) {
			t.Fatalf("accepted %q as %+v", s, p)
		}
		// Round trip: prefix + body + encoded checksum rebuilds the key.
		body := s[len(pre) : len(pre)+BodyLen]
		sum := format.checksum(pre + body)
		var enc [ChecksumLen]byte
		for i := ChecksumLen - 1; i >= 0; i-- {
			enc[i] = base62[sum%62]
			sum /= 62
		}
		if pre+body+string(enc[:]) != s {
			t.Fatalf("accepted %q does not round-trip", s)
		}
		// Checksum property: one changed byte is always caught.
		b := []byte(s)
		i := int(pos) % len(b)
		b[i] ^= 1 + pos%127
		if _, err := format.Parse(RawKey(b)); err == nil {
			t.Fatalf("accepted %q and also %q", s, b)
		}
	})
}

func BenchmarkParse(b *testing.B) {
	f := foriiFormat(b)
	raw, _ := f.Generate("sdk")
	b.ReportAllocs()
	for b.Loop() {
		if f.match(string(raw)) < 0 {
			b.Fatal("rejected")
		}
	}
}

func BenchmarkChecksum(b *testing.B) {
	f := foriiFormat(b)
	raw, _ := f.Generate("sdk")
	s := string(raw)[:len(raw)-ChecksumLen]
	b.ReportAllocs()
	for b.Loop() {
		f.checksum(s)
	}
}
