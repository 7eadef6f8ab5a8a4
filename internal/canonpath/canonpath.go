// Package canonpath gives a request path one canonical spelling, and
// refuses a path whose meaning depends on who decodes it.
//
// tokenbroker decides which credential a request gets from its path, but the
// upstream that receives the request decides what the path means. The two
// must agree. Envoy does not normalise paths unless normalize_path is set,
// nginx hands $request_uri over raw, and servers differ in how they treat
// dot segments, encoded slashes, backslashes, path parameters and odd
// percent-escapes: /v1/..;/admin is /admin to Tomcat, /v1%2F..%2Fadmin is
// /admin to a server that decodes before it splits. Such a path is refused
// (ok == false), never guessed at. Everything else is reduced to the form
// Envoy's normalize_path + merge_slashes would forward, so a route's
// path_prefix matches the same requests whichever proxy asked.
//
// The rules, applied to the path before the first "?" (the query never
// takes part in routing):
//
//   - an empty target is "/"; anything else must start with "/";
//   - refused: a segment that is only dots (".", "..", "...") or dots and
//     spaces, in any spelling (%2e, %2E, mixed), also when followed by path
//     parameters ("..;x", "..%3bx"); an encoded "/" (%2F) or "\" (%5C); a
//     raw "\" or "#"; control characters raw or encoded (%00-%1F, %7F); an
//     invalid percent-escape ("%", "%4", "%zz", "%u002e"); an escape
//     that decodes to another escape ("%252e", "%25%32%65": a server that
//     decodes twice sees "%2e" and then "."); bytes that are not UTF-8,
//     raw or once decoded ("%C0%AE" is an overlong ".");
//   - runs of "/" are merged (Envoy's merge_slashes), a trailing "/" kept;
//   - escapes of unreserved characters are decoded (RFC 3986 §6.2.2.2:
//     "/v%31" is "/v1"); other escapes get upper-case hex digits ("%3a" is
//     "%3A"); characters that must be escaped (space, non-ASCII, "<", "|",
//     …) are escaped, as Envoy's normalize_path does.
package canonpath

import "unicode/utf8"

// Canonical returns the canonical path of a request target, or ok == false
// when the path is ambiguous. It does not allocate when target's path is
// already canonical.
func Canonical(target string) (path string, ok bool) {
	p := target
	for i := 0; i < len(p); i++ {
		if p[i] == '?' {
			p = p[:i]
			break
		}
	}
	if target == "" {
		return "/", true
	}
	if p == "" || p[0] != '/' {
		return "", false
	}
	// Fast path: every byte plain, no "//", no dot segment.
	seg := 1
	for i := 1; i <= len(p); i++ {
		if i < len(p) && p[i] != '/' {
			if !plain[p[i]] {
				return slow(p)
			}
			continue
		}
		if i < len(p) && p[i-1] == '/' {
			return slow(p) // "//": merge
		}
		if dotsOnly(p[seg:i]) {
			return "", false
		}
		seg = i + 1
	}
	return p, true
}

// slow builds the canonical form of p, which starts with "/".
func slow(p string) (string, bool) {
	out := make([]byte, 0, len(p)+8)
	var decoded []byte // the current segment, fully decoded, for the checks
	for i := 1; i <= len(p); {
		// One segment: p[i:j].
		j := i
		for j < len(p) && p[j] != '/' {
			j++
		}
		s := p[i:j]
		i = j + 1
		if s == "" {
			continue // merged slash, or the root
		}
		out = append(out, '/')
		decoded = decoded[:0]
		for k := 0; k < len(s); k++ {
			c := s[k]
			switch {
			case c == '%':
				if k+2 >= len(s) || !isHex(s[k+1]) || !isHex(s[k+2]) {
					return "", false
				}
				v := unhex(s[k+1])<<4 | unhex(s[k+2])
				switch {
				case v == '/' || v == '\\' || v < 0x20 || v == 0x7f:
					return "", false
				case unreserved(v):
					out = append(out, v)
				default:
					out = append(out, '%', upperHex[v>>4], upperHex[v&15])
				}
				decoded = append(decoded, v)
				k += 2
			case c == '\\' || c == '#' || c < 0x20 || c == 0x7f:
				return "", false
			case plain[c]:
				out = append(out, c)
				decoded = append(decoded, c)
			default: // space, non-ASCII and the other characters a path must escape
				out = append(out, '%', upperHex[c>>4], upperHex[c&15])
				decoded = append(decoded, c)
			}
		}
		if !utf8.Valid(decoded) || dotsOnly(string(decoded)) || hasEscape(decoded) {
			return "", false
		}
	}
	if len(out) == 0 || p[len(p)-1] == '/' {
		out = append(out, '/')
	}
	return string(out), true
}

// dotsOnly reports whether a segment, cut at its first ";" (path
// parameters, which Tomcat and others strip before resolving), is made of
// dots and spaces with at least one dot: "..", ".", "...", ".. ", ". ."
// are all resolved as dot segments by some server.
func dotsOnly(seg string) bool {
	dot := false
	for i := 0; i < len(seg); i++ {
		switch seg[i] {
		case '.':
			dot = true
		case ' ':
		case ';':
			return dot
		default:
			return false
		}
	}
	return dot
}

// hasEscape reports whether a decoded segment still holds a
// percent-escape: the original was encoded twice ("%252e", "%25%32%65"), and
// a server that decodes twice sees what this package did not check.
func hasEscape(dec []byte) bool {
	for i := 0; i+2 < len(dec); i++ {
		if dec[i] == '%' && isHex(dec[i+1]) && isHex(dec[i+2]) {
			return true
		}
	}
	return false
}

// plain marks the characters RFC 3986 allows unescaped in a path segment
// (pchar without pct-encoded): unreserved, sub-delims, ":" and "@".
var plain = func() (t [256]bool) {
	for c := 0; c < 256; c++ {
		t[c] = unreserved(byte(c))
	}
	for _, c := range "!$&'()*+,;=:@" {
		t[c] = true
	}
	return t
}()

func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

const upperHex = "0123456789ABCDEF"
