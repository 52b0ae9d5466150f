package credits

import (
	"testing"
	"time"
)

func TestFingerprintIsCanonical(t *testing.T) {
	a, _ := ParseAmount("2.50")
	b, _ := ParseAmount("2.5")
	at := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	base := fingerprint('d', "acct", "debit", a, 7, at, "ref", "desc")
	if fingerprint('d', "acct", "debit", b, 7, at, "ref", "desc") != base {
		t.Fatal("2.50 and 2.5 fingerprint differently")
	}
	big, _ := ParseAmount("123456789012345.123456789012345678")
	big2, _ := ParseAmount("123456789012345.1234567890123456780")
	if fingerprint('d', "", "", big, 0, time.Time{}, "", "") != fingerprint('d', "", "", big2, 0, time.Time{}, "", "") {
		t.Fatal("long amounts fingerprint by text, not value")
	}
	c, _ := ParseAmount("25")
	z1, _ := ParseAmount("0")
	z2, _ := ParseAmount("0.000")
	if fingerprint('d', "", "", z1, 0, time.Time{}, "", "") != fingerprint('d', "", "", z2, 0, time.Time{}, "", "") {
		t.Fatal("zeros differ")
	}
	for i, other := range [][32]byte{
		fingerprint('c', "acct", "debit", a, 7, at, "ref", "desc"),
		fingerprint('d', "acct2", "debit", a, 7, at, "ref", "desc"),
		fingerprint('d', "acct", "grant", a, 7, at, "ref", "desc"),
		fingerprint('d', "acct", "debit", c, 7, at, "ref", "desc"),
		fingerprint('d', "acct", "debit", a.Neg(), 7, at, "ref", "desc"),
		fingerprint('d', "acct", "debit", a, 8, at, "ref", "desc"),
		fingerprint('d', "acct", "debit", a, 7, at.Add(1), "ref", "desc"),
		fingerprint('d', "acct", "debit", a, 7, time.Time{}, "ref", "desc"),
		fingerprint('d', "acct", "debit", a, 7, at, "ref2", "desc"),
		fingerprint('d', "acct", "debit", a, 7, at, "ref", "desc2"),
		fingerprint('d', "acct", "debit", a, 7, at, "refdesc", ""), // field boundaries
	} {
		if other == base {
			t.Errorf("variant %d has the same fingerprint", i)
		}
	}
}
