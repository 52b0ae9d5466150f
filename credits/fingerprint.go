package credits

import (
	"crypto/sha256"
	"encoding/binary"
	"time"
)

// fpBuilder builds the canonical encoding of a request: each field
// length-prefixed, amounts in their exact canonical form, so that two
// requests have one fingerprint exactly when all their fields are equal.
type fpBuilder struct{ buf []byte }

func newFP(op byte, accountID string) fpBuilder {
	b := fpBuilder{buf: make([]byte, 0, 192)}
	b.buf = append(b.buf, 'k', 'l', 1, op)
	b.str(accountID)
	return b
}

func (b *fpBuilder) str(s string) {
	b.buf = binary.AppendUvarint(b.buf, uint64(len(s)))
	b.buf = append(b.buf, s...)
}

func (b *fpBuilder) amount(a Amount) { b.str(a.String()) }

func (b *fpBuilder) int(n int64) { b.buf = binary.AppendVarint(b.buf, n) }

func (b *fpBuilder) time(t time.Time) {
	if t.IsZero() {
		b.int(0)
		return
	}
	b.int(t.UnixNano())
}

func (b *fpBuilder) sum() Fingerprint { return sha256.Sum256(b.buf) }
