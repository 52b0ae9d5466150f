package invoice

import "fmt"

// gstinChars is the GSTIN alphabet; a character's value is its index.
const gstinChars = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"

// ValidateGSTIN checks a GSTIN's shape and check digit: 2-digit state code
// (a known one), 10-character PAN (5 letters, 4 digits, 1 letter), entity
// number (1-9 or A-Z), the letter Z, and a mod-36 check character. It
// returns nil or an error wrapping ErrInvalidGSTIN.
func ValidateGSTIN(g string) error {
	if len(g) != 15 {
		return fmt.Errorf("%w: %q must be 15 characters", ErrInvalidGSTIN, clip(g))
	}
	if _, ok := StateName(g[:2]); !ok {
		return fmt.Errorf("%w: %q has unknown state code %q", ErrInvalidGSTIN, g, g[:2])
	}
	for i := 2; i < 15; i++ {
		c := g[i]
		letter, digit := 'A' <= c && c <= 'Z', '0' <= c && c <= '9'
		ok := false
		switch {
		case i < 7 || i == 11: // PAN letters
			ok = letter
		case i < 11: // PAN digits
			ok = digit
		case i == 12: // entity number
			ok = letter || ('1' <= c && c <= '9')
		case i == 13:
			ok = c == 'Z'
		default: // check character
			ok = letter || digit
		}
		if !ok {
			return fmt.Errorf("%w: %q: bad character at position %d", ErrInvalidGSTIN, g, i+1)
		}
	}
	if want := gstinCheck(g[:14]); g[14] != want {
		return fmt.Errorf("%w: %q: check character should be %c", ErrInvalidGSTIN, g, want)
	}
	return nil
}

// gstinCheck computes the GSTIN check character of the first 14: each
// character's value is multiplied by 1 and 2 alternately, the quotient and
// remainder of each product by 36 are summed, and the check value is
// (36 - sum mod 36) mod 36.
func gstinCheck(s string) byte {
	sum := 0
	for i := 0; i < len(s); i++ {
		v := indexByte(gstinChars, s[i])
		if i%2 == 1 {
			v *= 2
		}
		sum += v/36 + v%36
	}
	return gstinChars[(36-sum%36)%36]
}

func indexByte(s string, c byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return i
		}
	}
	return 0
}

// StateName returns the name of a GST state code ("29" → "Karnataka").
func StateName(code string) (string, bool) {
	switch code {
	case "01":
		return "Jammu and Kashmir", true
	case "02":
		return "Himachal Pradesh", true
	case "03":
		return "Punjab", true
	case "04":
		return "Chandigarh", true
	case "05":
		return "Uttarakhand", true
	case "06":
		return "Haryana", true
	case "07":
		return "Delhi", true
	case "08":
		return "Rajasthan", true
	case "09":
		return "Uttar Pradesh", true
	case "10":
		return "Bihar", true
	case "11":
		return "Sikkim", true
	case "12":
		return "Arunachal Pradesh", true
	case "13":
		return "Nagaland", true
	case "14":
		return "Manipur", true
	case "15":
		return "Mizoram", true
	case "16":
		return "Tripura", true
	case "17":
		return "Meghalaya", true
	case "18":
		return "Assam", true
	case "19":
		return "West Bengal", true
	case "20":
		return "Jharkhand", true
	case "21":
		return "Odisha", true
	case "22":
		return "Chhattisgarh", true
	case "23":
		return "Madhya Pradesh", true
	case "24":
		return "Gujarat", true
	case "26":
		return "Dadra and Nagar Haveli and Daman and Diu", true
	case "27":
		return "Maharashtra", true
	case "29":
		return "Karnataka", true
	case "30":
		return "Goa", true
	case "31":
		return "Lakshadweep", true
	case "32":
		return "Kerala", true
	case "33":
		return "Tamil Nadu", true
	case "34":
		return "Puducherry", true
	case "35":
		return "Andaman and Nicobar Islands", true
	case "36":
		return "Telangana", true
	case "37":
		return "Andhra Pradesh", true
	case "38":
		return "Ladakh", true
	case "97":
		return "Other Territory", true
	}
	return "", false
}

// unionTerritoryWithoutLegislature reports whether intra-state supply in
// the state code is taxed as CGST + UTGST instead of CGST + SGST.
func unionTerritoryWithoutLegislature(code string) bool {
	switch code {
	case "04", "26", "31", "35", "38", "97":
		return true
	}
	return false
}

func clip(s string) string {
	if len(s) > 32 {
		return s[:32]
	}
	return s
}
