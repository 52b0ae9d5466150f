package invoice

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// istOffset is India Standard Time, UTC+05:30. India has kept this offset
// without daylight saving since 1945, so a fixed zone is exact for every
// invoice date and needs no time zone database on the host.
const istOffset = 5*3600 + 30*60

// IST returns the India Standard Time zone (Asia/Kolkata).
func IST() *time.Location { return time.FixedZone("IST", istOffset) }

// Financial-year bounds for numbering: the short form "26-27" names years
// 2000-01 to 2098-99.
const (
	minFY = 2000
	maxFY = 2098
)

// FinancialYear is an Indian financial year, named by the calendar year it
// starts in: FinancialYear(2026) is FY 2026-27, 1 April 2026 to 31 March
// 2027 in India Standard Time.
type FinancialYear int

// FinancialYearOf returns the financial year of t, taken in IST: 31 March
// 2027 23:59 IST is in 2026-27, 1 April 2027 00:00 IST in 2027-28.
func FinancialYearOf(t time.Time) FinancialYear {
	t = t.In(IST())
	if t.Month() < time.April {
		return FinancialYear(t.Year() - 1)
	}
	return FinancialYear(t.Year())
}

// String returns the year as "2026-27".
func (fy FinancialYear) String() string {
	return fmt.Sprintf("%d-%02d", int(fy), (int(fy)+1)%100)
}

// Short returns the year as "26-27", the form used in invoice numbers.
func (fy FinancialYear) Short() string {
	return fmt.Sprintf("%02d-%02d", int(fy)%100, (int(fy)+1)%100)
}

// Start returns 1 April 00:00 IST of the year.
func (fy FinancialYear) Start() time.Time {
	return time.Date(int(fy), time.April, 1, 0, 0, 0, 0, IST())
}

// End returns the first instant after the year: 1 April 00:00 IST of the
// next calendar year.
func (fy FinancialYear) End() time.Time { return (fy + 1).Start() }

// Rule 46(b) of the CGST Rules 2017: a consecutive serial number of at most
// 16 characters, letters, digits, "-" and "/" only, unique for a financial
// year.
const maxNumberLen = 16

// ValidateNumber checks an invoice number against Rule 46(b): 1 to 16
// characters of letters, digits, "-" and "/".
func ValidateNumber(s string) error {
	if s == "" || len(s) > maxNumberLen {
		return fmt.Errorf("%w: %q must be 1 to %d characters", ErrInvalidNumber, clip(s), maxNumberLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || c == '-' || c == '/') {
			return fmt.Errorf("%w: %q may hold only letters, digits, - and /", ErrInvalidNumber, s)
		}
	}
	return nil
}

// Numberer formats sequential invoice numbers per financial year as
// PREFIX/YY-YY/NNNNNN, e.g. INV/26-27/000001. It is a pure function of the
// year and a sequence number; the caller keeps one counter per financial
// year (starting at 1) in its store, incremented in the same transaction
// that records the invoice, so numbers stay consecutive and unique.
//
// The full year ("INV/2026-27/000001") would be 18 characters, over Rule
// 46(b)'s limit of 16, hence the two-digit form.
type Numberer struct {
	prefix string
	digits int
}

// DefaultNumberer formats INV/26-27/000001: 16 characters, up to 999,999
// invoices a year.
func DefaultNumberer() Numberer { return Numberer{prefix: "INV", digits: 6} }

// NewNumberer returns a Numberer with the given prefix (letters and digits)
// and zero-padded sequence width; the formatted number must fit Rule 46(b)'s
// 16 characters.
func NewNumberer(prefix string, digits int) (Numberer, error) {
	if prefix == "" || digits < 1 || len(prefix)+len("/26-27/")+digits > maxNumberLen {
		return Numberer{}, fmt.Errorf("%w: prefix %q with %d digits exceeds %d characters", ErrInvalidNumberer, clip(prefix), digits, maxNumberLen)
	}
	for i := 0; i < len(prefix); i++ {
		c := prefix[i]
		if !('0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z') {
			return Numberer{}, fmt.Errorf("%w: prefix %q may hold only letters and digits", ErrInvalidNumberer, prefix)
		}
	}
	return Numberer{prefix: prefix, digits: digits}, nil
}

// Max returns the largest sequence number Format accepts.
func (n Numberer) Max() int64 {
	m := int64(1)
	for range n.digits {
		m *= 10
	}
	return m - 1
}

// Format returns the number of invoice seq (1-based) in year fy. It fails
// with ErrSequenceExhausted past Max, or ErrInvalidNumber for seq < 1 or a
// year outside 2000-01..2098-99.
func (n Numberer) Format(fy FinancialYear, seq int64) (string, error) {
	if n.digits == 0 {
		n = DefaultNumberer()
	}
	switch {
	case fy < minFY || fy > maxFY:
		return "", fmt.Errorf("%w: financial year %d out of range", ErrInvalidNumber, int(fy))
	case seq < 1:
		return "", fmt.Errorf("%w: sequence %d must be at least 1", ErrInvalidNumber, seq)
	case seq > n.Max():
		return "", fmt.Errorf("%w: %d > %d in %s", ErrSequenceExhausted, seq, n.Max(), fy)
	}
	return fmt.Sprintf("%s/%s/%0*d", n.prefix, fy.Short(), n.digits, seq), nil
}

// Parse is the inverse of Format: it returns the year and sequence of a
// number this Numberer formats, or an error wrapping ErrInvalidNumber.
func (n Numberer) Parse(s string) (FinancialYear, int64, error) {
	if n.digits == 0 {
		n = DefaultNumberer()
	}
	bad := func() (FinancialYear, int64, error) {
		return 0, 0, fmt.Errorf("%w: %q is not %s/YY-YY/%s", ErrInvalidNumber, clip(s), n.prefix, strings.Repeat("N", n.digits))
	}
	rest, ok := strings.CutPrefix(s, n.prefix+"/")
	if !ok || len(rest) != len("26-27/")+n.digits || rest[2] != '-' || rest[5] != '/' {
		return bad()
	}
	y1, err1 := strconv.Atoi(rest[0:2])
	y2, err2 := strconv.Atoi(rest[3:5])
	seq, err3 := strconv.ParseInt(rest[6:], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || !allDigits(rest[0:2]+rest[3:5]+rest[6:]) || (y1+1)%100 != y2 || seq < 1 {
		return bad()
	}
	fy := FinancialYear(2000 + y1)
	if fy > maxFY {
		return bad()
	}
	return fy, seq, nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
