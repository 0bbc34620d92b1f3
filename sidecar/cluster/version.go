package cluster

import (
	"fmt"
	"strconv"
	"strings"
)

// NormalizeVersion returns the comparable form of a release version: no
// leading "v", no build suffix ("1.1.6+git1234" -> "1.1.6"), pre-release kept
// ("1.2.0-rc1").
func NormalizeVersion(v string) (string, error) {
	core, pre, err := splitVersion(v)
	if err != nil {
		return "", err
	}
	parts := make([]string, len(core))
	for i, n := range core {
		parts[i] = strconv.Itoa(n)
	}
	s := strings.Join(parts, ".")
	if pre != "" {
		s += "-" + pre
	}
	return s, nil
}

// CompareVersions orders two release versions: -1 if a < b, 0 if equal, 1
// if a > b. Missing minor or patch numbers count as 0, a pre-release sorts
// before its release, and pre-release words compare naturally (rc2 < rc10).
func CompareVersions(a, b string) (int, error) {
	ca, pa, err := splitVersion(a)
	if err != nil {
		return 0, err
	}
	cb, pb, err := splitVersion(b)
	if err != nil {
		return 0, err
	}
	for i := range ca {
		if c := cmpInt(ca[i], cb[i]); c != 0 {
			return c, nil
		}
	}
	switch {
	case pa == pb:
		return 0, nil
	case pa == "":
		return 1, nil
	case pb == "":
		return -1, nil
	}
	return comparePrerelease(pa, pb), nil
}

// splitVersion parses "v1.2.3-rc1+build" into [1 2 3] and "rc1".
func splitVersion(v string) ([3]int, string, error) {
	var core [3]int
	s := strings.TrimPrefix(strings.TrimSpace(v), "v")
	if i := strings.IndexByte(s, '+'); i >= 0 {
		s = s[:i]
	}
	s, pre, hasPre := strings.Cut(s, "-")
	if hasPre && pre == "" {
		return core, "", fmt.Errorf("version %q: empty pre-release after '-'", v)
	}
	nums := strings.Split(s, ".")
	if len(nums) > 3 {
		return core, "", fmt.Errorf("version %q: more than three numbers", v)
	}
	for i, n := range nums {
		if n == "" || len(n) > 9 || strings.Trim(n, "0123456789") != "" {
			return core, "", fmt.Errorf("version %q: %q is not a number", v, n)
		}
		core[i], _ = strconv.Atoi(n) // cannot fail: at most 9 digits
	}
	return core, pre, nil
}

func comparePrerelease(a, b string) int {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) && i < len(bs); i++ {
		if c := compareNatural(as[i], bs[i]); c != 0 {
			return c
		}
	}
	return cmpInt(len(as), len(bs))
}

// compareNatural compares runs of digits by value and other runs as text,
// so "rc2" < "rc10" and "alpha" < "beta".
func compareNatural(a, b string) int {
	for a != "" && b != "" {
		ra, restA := leadingRun(a)
		rb, restB := leadingRun(b)
		numA, numB := isDigit(ra[0]), isDigit(rb[0])
		var c int
		switch {
		case numA && numB:
			c = compareDigits(ra, rb)
		case numA: // numbers sort before words, as in semver
			c = -1
		case numB:
			c = 1
		default:
			c = strings.Compare(ra, rb)
		}
		if c != 0 {
			return c
		}
		a, b = restA, restB
	}
	return cmpInt(len(a), len(b))
}

// compareDigits compares two runs of digits by value, whatever their length.
func compareDigits(a, b string) int {
	a, b = strings.TrimLeft(a, "0"), strings.TrimLeft(b, "0")
	if c := cmpInt(len(a), len(b)); c != 0 {
		return c
	}
	return strings.Compare(a, b)
}

// leadingRun splits off the leading run of digits or of non-digits.
func leadingRun(s string) (string, string) {
	digit := isDigit(s[0])
	i := 1
	for i < len(s) && isDigit(s[i]) == digit {
		i++
	}
	return s[:i], s[i:]
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
