package apikey

import (
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"hash/crc32"
	"slices"
	"strings"
)

// Key layout. The body carries 28 × log2(62) ≈ 166 bits from crypto/rand; a
// Hint shows at most 6 of its characters, which leaves at least 131 secret
// bits. The checksum is a CRC32 (IEEE) of prefix and body written as 6 base62
// digits (62^6 > 2^32), most significant first.
const (
	BodyLen      = 28
	ChecksumLen  = 6
	MaxPrefixLen = 32
	MinHintChars = 4
	MaxHintChars = 6
	// MaxKeyLen is the longest raw key any Format accepts.
	MaxKeyLen = MaxPrefixLen + BodyLen + ChecksumLen
)

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// KeyType is one kind of key a Format issues and accepts.
type KeyType struct {
	// Name identifies the type in APIKey.Type and CreateParams.Type
	// ("sdk", "api", "live", "test").
	Name string `json:"name"`
	// Prefix starts every key of the type ("forii_sk_", "or_"): 1 to 32
	// characters of A-Z, a-z, 0-9, '_' and '-'.
	Prefix string `json:"prefix"`
	// Environment of the type's keys (EnvLive if empty).
	Environment Environment `json:"environment"`
}

// FormatConfig configures NewFormat.
type FormatConfig struct {
	// Types are the key types; the first is the default of Create. Names
	// and prefixes must be unique. One prefix may start another (Forii's
	// "forii_" and "forii_sk_"): the body alphabet has no '_' and every key
	// of a type has the same length, so a key matches exactly one type.
	Types []KeyType
	// HintChars is how many body characters APIKey.Hint shows, 4 to 6
	// (4 by default: "kw_live_abc1"; OpenRush shows 6: "or_abc123").
	HintChars int
}

// Format issues and parses raw keys. It is immutable and safe for concurrent
// use.
type Format struct {
	types     []KeyType // in configuration order
	hintChars int
	digit     [256]byte // base62 digit value (0 for other bytes)
	isDigit   [256]byte // 1 for base62 digits, 0 for other bytes
	crc       *[8][256]uint32
}

// NewFormat validates c and returns a Format, or an error wrapping
// ErrInvalidFormat.
func NewFormat(c FormatConfig) (*Format, error) {
	hint := c.HintChars
	if hint == 0 {
		hint = MinHintChars
	}
	if hint < MinHintChars || hint > MaxHintChars {
		return nil, fmt.Errorf("%w: HintChars must be %d to %d", ErrInvalidFormat, MinHintChars, MaxHintChars)
	}
	if len(c.Types) == 0 {
		return nil, fmt.Errorf("%w: no key types", ErrInvalidFormat)
	}
	types := make([]KeyType, 0, len(c.Types))
	for _, t := range c.Types {
		if t.Environment == "" {
			t.Environment = EnvLive
		}
		switch {
		case strings.TrimSpace(t.Name) != t.Name || t.Name == "" || len(t.Name) > 32:
			return nil, fmt.Errorf("%w: key type name %q", ErrInvalidFormat, t.Name)
		case !validPrefix(t.Prefix):
			return nil, fmt.Errorf("%w: prefix %q (1-%d of A-Z a-z 0-9 _ -)", ErrInvalidFormat, t.Prefix, MaxPrefixLen)
		case !t.Environment.Valid():
			return nil, fmt.Errorf("%w: environment %q", ErrInvalidFormat, t.Environment)
		}
		for _, o := range types {
			if o.Name == t.Name || o.Prefix == t.Prefix {
				return nil, fmt.Errorf("%w: duplicate key type %q or prefix %q", ErrInvalidFormat, t.Name, t.Prefix)
			}
		}
		types = append(types, t)
	}
	return build(types, hint), nil
}

// DefaultFormat has two types: "live" keys starting "kl_live_" and "test"
// keys starting "kl_test_", with 4-character hints.
func DefaultFormat() *Format {
	return build([]KeyType{
		{Name: "live", Prefix: "kl_live_", Environment: EnvLive},
		{Name: "test", Prefix: "kl_test_", Environment: EnvTest},
	}, MinHintChars)
}

func build(types []KeyType, hintChars int) *Format {
	f := &Format{types: types, hintChars: hintChars, crc: crcTables()}
	for i := 0; i < len(base62); i++ {
		f.digit[base62[i]], f.isDigit[base62[i]] = byte(i), 1
	}
	return f
}

func validPrefix(p string) bool {
	if p == "" || len(p) > MaxPrefixLen {
		return false
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Types returns the key types in configuration order.
func (f *Format) Types() []KeyType { return slices.Clone(f.types) }

// HintChars is the number of body characters in a Hint.
func (f *Format) HintChars() int { return f.hintChars }

// typeIndex returns the index of the named type ("" is the first), or -1.
func (f *Format) typeIndex(name string) int {
	if name == "" {
		return 0
	}
	for i, t := range f.types {
		if t.Name == name {
			return i
		}
	}
	return -1
}

// Parsed describes a well-formed key.
type Parsed struct {
	Type KeyType
	// Hint is the key's prefix plus its first HintChars body characters.
	Hint string
}

// Parse checks the prefix, length, alphabet and checksum of raw without
// hashing it or touching any store, and returns ErrMalformed if any is wrong.
func (f *Format) Parse(raw RawKey) (Parsed, error) {
	i := f.match(string(raw))
	if i < 0 {
		return Parsed{}, ErrMalformed
	}
	t := f.types[i]
	return Parsed{Type: t, Hint: string(raw)[:len(t.Prefix)+f.hintChars]}, nil
}

// match returns the index of the type of a well-formed key s, or -1. The
// length pins the prefix length, so at most one type can match.
func (f *Format) match(s string) int {
	for i := range f.types {
		p := f.types[i].Prefix
		if len(s) == len(p)+BodyLen+ChecksumLen && s[:len(p)] == p {
			if f.validTail(s, len(p)) {
				return i
			}
			return -1
		}
	}
	return -1
}

// validTail checks that s[start:] is base62 and that its last ChecksumLen
// characters encode the CRC32 of everything before them. The alphabet
// check is branch-free, four bytes a step.
func (f *Format) validTail(s string, start int) bool {
	end := len(s) - ChecksumLen
	body, cs := s[start:end], s[end:]
	ok := byte(1)
	for len(body) >= 4 {
		ok &= f.isDigit[body[0]] & f.isDigit[body[1]] & f.isDigit[body[2]] & f.isDigit[body[3]]
		body = body[4:]
	}
	for i := 0; i < len(body); i++ {
		ok &= f.isDigit[body[i]]
	}
	var sum uint64
	for i := 0; i < len(cs); i++ {
		d := f.digit[cs[i]]
		ok &= f.isDigit[cs[i]]
		sum = sum*62 + uint64(d)
	}
	return ok == 1 && sum == uint64(f.checksum(s[:end]))
}

// Generate returns a new, well-formed raw key of the named type ("" for the
// first) without storing it, or ErrInvalidType. Service.Create uses the same
// generator; Generate serves tests and tools that need keys no store knows.
func (f *Format) Generate(typeName string) (RawKey, error) {
	i := f.typeIndex(typeName)
	if i < 0 {
		return "", fmt.Errorf("%w: %q", ErrInvalidType, typeName)
	}
	return f.generate(i), nil
}

// generate returns a new raw key of type i.
func (f *Format) generate(i int) RawKey {
	p := f.types[i].Prefix
	b := make([]byte, len(p)+BodyLen+ChecksumLen)
	copy(b, p)
	body := b[len(p) : len(p)+BodyLen]
	var rnd [64]byte
	for n := 0; n < BodyLen; {
		_, _ = rand.Read(rnd[:]) // never fails (Go ≥ 1.24)
		for _, r := range rnd {
			// Rejection sampling: 6 random bits, values 62 and 63 dropped,
			// so every digit is uniform.
			if v := r & 63; v < 62 && n < BodyLen {
				body[n] = base62[v]
				n++
			}
		}
	}
	sum := f.checksum(string(b[:len(p)+BodyLen]))
	for j := len(b) - 1; j >= len(p)+BodyLen; j-- {
		b[j] = base62[sum%62]
		sum /= 62
	}
	return RawKey(b)
}

// hashKey returns the SHA-256 of s. Copying into a stack buffer avoids the
// heap allocation of []byte(s); callers pass well-formed keys, which are at
// most MaxKeyLen bytes.
func hashKey(s string) [32]byte {
	var buf [MaxKeyLen]byte
	n := copy(buf[:], s)
	return sha256.Sum256(buf[:n])
}

// checksum is the CRC32 (IEEE) of s, slicing-by-8 over the string so that
// the hot path neither converts s to []byte nor calls through hash/crc32's
// function variables (which make the buffer escape).
func (f *Format) checksum(s string) uint32 {
	t := f.crc
	crc := ^uint32(0)
	for len(s) >= 8 {
		crc ^= uint32(s[0]) | uint32(s[1])<<8 | uint32(s[2])<<16 | uint32(s[3])<<24
		crc = t[0][s[7]] ^ t[1][s[6]] ^ t[2][s[5]] ^ t[3][s[4]] ^
			t[4][crc>>24] ^ t[5][crc>>16&0xff] ^ t[6][crc>>8&0xff] ^ t[7][crc&0xff]
		s = s[8:]
	}
	for i := 0; i < len(s); i++ {
		crc = t[0][byte(crc)^s[i]] ^ crc>>8
	}
	return ^crc
}

func crcTables() *[8][256]uint32 {
	var t [8][256]uint32
	t[0] = *crc32.IEEETable
	for i := range 256 {
		c := t[0][i]
		for k := 1; k < 8; k++ {
			c = t[0][c&0xff] ^ c>>8
			t[k][i] = c
		}
	}
	return &t
}
