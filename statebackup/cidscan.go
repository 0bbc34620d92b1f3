package statebackup

import "unicode/utf8"

// A pin object is a few hundred bytes of which only the cid matters here. encoding/json reads the whole object
// twice (validation, then decoding) and made cid extraction half the cost of verifying an export, so the simple,
// overwhelmingly common shapes are scanned by hand. Anything unusual (escapes in a key or in the cid, a cid that
// is neither a plain string nor {"/": "..."}, a key spelled "CID") falls back to encoding/json, and a fuzz test
// holds the two paths to the same answers.

// cidFast returns the top-level "cid" of a valid JSON object, and false when it cannot decide simply.
func cidFast(raw []byte) (string, bool) {
	i := skipSpace(raw, 0)
	if i >= len(raw) || raw[i] != '{' {
		return "", false
	}
	cid, found := "", false
	for i = skipSpace(raw, i+1); i < len(raw) && raw[i] != '}'; {
		key, next, ok := plainString(raw, i)
		if !ok {
			return "", false
		}
		i = skipSpace(raw, next)
		if i >= len(raw) || raw[i] != ':' {
			return "", false
		}
		i = skipSpace(raw, i+1)
		if len(key) == 3 && (key[0]|0x20) == 'c' && (key[1]|0x20) == 'i' && (key[2]|0x20) == 'd' {
			if string(key) != "cid" {
				return "", false // encoding/json matches keys case-insensitively; leave such objects to it
			}
			if cid, next, ok = cidValue(raw, i); !ok {
				return "", false
			}
			found = true // a later duplicate overrides, as in encoding/json
		} else if next, ok = skipValue(raw, i); !ok {
			return "", false
		}
		i = skipSpace(raw, next)
		if i < len(raw) && raw[i] == ',' {
			i = skipSpace(raw, i+1)
		}
	}
	return cid, found && cid != ""
}

// cidValue reads a cid written as "..." (1.x) or {"/": "..."} (0.14.5).
func cidValue(raw []byte, i int) (string, int, bool) {
	if i < len(raw) && raw[i] == '"' {
		cid, next, ok := plainString(raw, i)
		return string(cid), next, ok
	}
	if i >= len(raw) || raw[i] != '{' {
		return "", 0, false
	}
	key, i, ok := plainString(raw, skipSpace(raw, i+1))
	if !ok || string(key) != "/" {
		return "", 0, false
	}
	if i = skipSpace(raw, i); i >= len(raw) || raw[i] != ':' {
		return "", 0, false
	}
	cid, i, ok := plainString(raw, skipSpace(raw, i+1))
	if !ok {
		return "", 0, false
	}
	if i = skipSpace(raw, i); i >= len(raw) || raw[i] != '}' {
		return "", 0, false
	}
	return string(cid), i + 1, true
}

// plainString reads a JSON string starting at raw[i] that has no escapes and is valid UTF-8, returning its text
// (not copied) and the index after its closing quote.
func plainString(raw []byte, i int) ([]byte, int, bool) {
	if i >= len(raw) || raw[i] != '"' {
		return nil, 0, false
	}
	for j := i + 1; j < len(raw); j++ {
		switch raw[j] {
		case '\\':
			return nil, 0, false
		case '"':
			if !utf8.Valid(raw[i+1 : j]) {
				return nil, 0, false // encoding/json would replace the bad bytes
			}
			return raw[i+1 : j], j + 1, true
		}
	}
	return nil, 0, false
}

// skipValue returns the index just after the JSON value starting at raw[i].
func skipValue(raw []byte, i int) (int, bool) {
	depth := 0
	for j := i; j < len(raw); j++ {
		switch c := raw[j]; c {
		case '"':
			end, ok := skipString(raw, j)
			if !ok {
				return 0, false
			}
			if depth == 0 {
				return end, true
			}
			j = end - 1
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return j, true // end of a literal that ran up to the enclosing object's close
			}
			if depth--; depth == 0 {
				return j + 1, true
			}
		case ',', ' ', '\t', '\n', '\r':
			if depth == 0 {
				return j, true
			}
		}
	}
	return 0, false
}

// skipString returns the index after the closing quote of the string starting at raw[i], escapes included.
func skipString(raw []byte, i int) (int, bool) {
	for j := i + 1; j < len(raw); j++ {
		switch raw[j] {
		case '\\':
			j++
		case '"':
			return j + 1, true
		}
	}
	return 0, false
}

func skipSpace(raw []byte, i int) int {
	for i < len(raw) && (raw[i] == ' ' || raw[i] == '\t' || raw[i] == '\n' || raw[i] == '\r') {
		i++
	}
	return i
}
