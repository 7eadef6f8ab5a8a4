package filter

import (
	"net/netip"
	"strings"

	"github.com/tokenbroker/tokenbroker/internal/logthrottle"
)

// sourcePolicy says which callers may use a credential: a caller is allowed
// when its principal matches one pattern or its address lies in one prefix.
// A nil policy allows everyone.
type sourcePolicy struct {
	principals []string // exact, or with "*" standing for one whole path segment
	prefixes   []netip.Prefix
	// deniedLog throttles the "source not allowed" lines of the credential:
	// only a credential with a policy can deny a source.
	deniedLog logthrottle.Throttle
}

// newSourcePolicy compiles allowed_sources (validated by package config).
func newSourcePolicy(entries []string) *sourcePolicy {
	if len(entries) == 0 {
		return nil
	}
	p := &sourcePolicy{}
	for _, e := range entries {
		if pfx, err := netip.ParsePrefix(e); err == nil {
			p.prefixes = append(p.prefixes, pfx.Masked())
		} else if a, err := netip.ParseAddr(e); err == nil {
			p.prefixes = append(p.prefixes, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
		} else {
			p.principals = append(p.principals, e)
		}
	}
	return p
}

// allows reports whether a caller with this principal and address may use
// the credential. address may be empty or unparsable: it then matches no prefix.
func (p *sourcePolicy) allows(principal, address string) bool {
	if p == nil {
		return true
	}
	if principal != "" {
		for _, pat := range p.principals {
			if matchPrincipal(pat, principal) {
				return true
			}
		}
	}
	if len(p.prefixes) > 0 && address != "" {
		if a, err := netip.ParseAddr(address); err == nil {
			a = a.Unmap()
			for _, pfx := range p.prefixes {
				if pfx.Contains(a) {
					return true
				}
			}
		}
	}
	return false
}

// matchPrincipal matches s against pat segment by segment ("/"-separated);
// a "*" segment matches any one non-empty segment, so
// spiffe://td/ns/payments/sa/* matches every service account of namespace
// payments but nothing deeper. It does not allocate.
func matchPrincipal(pat, s string) bool {
	if !strings.Contains(pat, "*") {
		return pat == s
	}
	for {
		pseg, prest, pmore := strings.Cut(pat, "/")
		sseg, srest, smore := strings.Cut(s, "/")
		if pseg == "*" {
			if sseg == "" {
				return false
			}
		} else if pseg != sseg {
			return false
		}
		if pmore != smore {
			return false
		}
		if !pmore {
			return true
		}
		pat, s = prest, srest
	}
}
