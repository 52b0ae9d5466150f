package invoice

import (
	"strings"

	"github.com/shopspring/decimal"
)

// FormatINR formats an amount with 2 decimals and Indian digit grouping
// (lakh, crore): 1234567.5 → "12,34,567.50". It rounds half-up to the
// paisa; invoice amounts already have at most 2 decimals.
func FormatINR(d decimal.Decimal) string {
	s := d.StringFixed(2)
	sign := ""
	if strings.HasPrefix(s, "-") {
		sign, s = "-", s[1:]
	}
	intPart, frac, _ := strings.Cut(s, ".")
	if n := len(intPart); n > 3 {
		head, groups := intPart[:n-3], []string{intPart[n-3:]}
		for len(head) > 2 {
			groups = append(groups, head[len(head)-2:])
			head = head[:len(head)-2]
		}
		groups = append(groups, head)
		for i, j := 0, len(groups)-1; i < j; i, j = i+1, j-1 {
			groups[i], groups[j] = groups[j], groups[i]
		}
		intPart = strings.Join(groups, ",")
	}
	return sign + intPart + "." + frac
}

// AmountInWords spells a non-negative amount in the Indian system:
// 590.5 → "Rupees Five Hundred Ninety and Fifty Paise Only". Amounts are
// rounded half-up to the paisa; negative amounts and amounts of 10^16
// rupees or more return "".
func AmountInWords(d decimal.Decimal) string {
	d = d.Round(2)
	if d.IsNegative() || d.GreaterThanOrEqual(decimal.New(1, maxAmountSz)) {
		return ""
	}
	rupees := d.IntPart()
	paise := d.Sub(decimal.NewFromInt(rupees)).Shift(2).IntPart()
	var b strings.Builder
	b.WriteString("Rupees ")
	if rupees == 0 {
		b.WriteString("Zero")
	} else {
		b.WriteString(indianWords(rupees))
	}
	if paise > 0 {
		b.WriteString(" and ")
		b.WriteString(indianWords(paise))
		b.WriteString(" Paise")
	}
	b.WriteString(" Only")
	return b.String()
}

// indianWords spells 1 <= n < 10^16 with crore, lakh, thousand, hundred.
func indianWords(n int64) string {
	var parts []string
	if c := n / 1_00_00_000; c > 0 {
		parts = append(parts, indianWords(c), "Crore")
		n %= 1_00_00_000
	}
	for _, u := range []struct {
		div  int64
		name string
	}{{1_00_000, "Lakh"}, {1_000, "Thousand"}, {100, "Hundred"}} {
		if q := n / u.div; q > 0 {
			parts = append(parts, belowHundred(q), u.name)
			n %= u.div
		}
	}
	if n > 0 {
		parts = append(parts, belowHundred(n))
	}
	return strings.Join(parts, " ")
}

func belowHundred(n int64) string {
	ones := [...]string{"", "One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine", "Ten",
		"Eleven", "Twelve", "Thirteen", "Fourteen", "Fifteen", "Sixteen", "Seventeen", "Eighteen", "Nineteen"}
	tens := [...]string{"", "", "Twenty", "Thirty", "Forty", "Fifty", "Sixty", "Seventy", "Eighty", "Ninety"}
	if n < 20 {
		return ones[n]
	}
	if n%10 == 0 {
		return tens[n/10]
	}
	return tens[n/10] + " " + ones[n%10]
}
