// Package filter decides, for one outbound request, which credential applies
// and which headers to set or remove. It is transport-free: package envoy
// turns wire requests into a Request and a Decision back into a response.
package filter

import (
	"context"
	"errors"
	"iter"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/tokenbroker/tokenbroker/budget"
	"github.com/tokenbroker/tokenbroker/cache"
	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/credential"
	"github.com/tokenbroker/tokenbroker/internal/canonpath"
)

// ReasonHeader carries a short, secret-free reason on every denial.
const ReasonHeader = "x-tokenbroker-reason"

// ContextExtensionKey is the Envoy per-route context extension that names the
// credential to use; it wins over host routes.
const ContextExtensionKey = "credential"

// Request is what the filter needs to know about one outbound request.
type Request struct {
	Host   string // authority, any case, may carry a port
	Path   string // path, may include the query
	Method string

	// Credential, when set, names the credential directly (Envoy's
	// context_extensions["credential"]) and wins over host routes.
	Credential string

	// Principal is the caller's authenticated identity (Envoy's
	// attributes.source.principal, a SPIFFE ID under mTLS) and SourceAddress
	// its IP address; allowed_sources is matched against them.
	Principal     string
	SourceAddress string

	// Invalid, when set, says why the transport could not read the request
	// (e.g. "invalid UTF-8"); Decide denies it with that reason, whatever
	// default_action says: nothing is known about where it goes.
	Invalid string

	// Transport is TransportGRPC or TransportHTTP, for the status page.
	Transport string
}

// Bounds on what a request may carry. Both transports apply them (through
// Decide), so a Check costs the same small amount however large the fields
// a caller sends: gRPC itself admits messages of up to 4 MiB.
const (
	// MaxHostBytes bounds the destination host, port included: a DNS name
	// is at most 253 bytes. It stops hosts of thousands of labels, which
	// cost seconds of CPU to match against wildcard routes before this
	// bound and the per-suffix lookup existed.
	MaxHostBytes = 255
	// MaxPathBytes bounds the path with its query. It is above Envoy's
	// default request-header limit (60 KiB, max_request_headers_kb), so no
	// request Envoy forwards by default is refused, and it bounds the work
	// and the copy canonicalising an odd path may take.
	MaxPathBytes = 64 << 10
)

// Reasons of the denials that are about the request itself rather than a
// route or a token. They are sent in ReasonHeader.
const (
	ReasonAmbiguousPath = "ambiguous path"
	ReasonHostTooLong   = "host too long"
	ReasonPathTooLong   = "path too long"
)

// Header is one header to set on the outbound request.
type Header struct{ Name, Value string }

// Decision is the filter's answer. When Allowed, Header (if Name is set) must
// overwrite any header of that name; otherwise Status and Reason describe the
// denial.
type Decision struct {
	Allowed    bool
	Header     Header
	Status     int    // HTTP status of a denial: 403 or 503
	Reason     string // short and secret-free; sent in ReasonHeader
	Credential string // the credential chosen, "" when none

	// Remove lists incoming headers to remove (a route's remove_headers,
	// lower-case, never Header.Name). It is shared: do not modify it.
	Remove []string
}

// Filter holds the compiled routes and credentials of one configuration.
// It is immutable after New and safe for concurrent use.
type Filter struct {
	routes       *table
	bindings     map[string]*binding
	defaultAllow bool
	tokens       *cache.Tokens
	log          *zap.Logger
	m            *Metrics
	routeNames   map[*route]string // for spans; nil while tracing is off (observe.go)

	anySource atomic.Pointer[sourceUnion] // every credential's allowed_sources, built on first AllowsAny (push.go)
}

// binding joins a credential's name, cache key, source and header format.
// There is one per credential (100,000 of them in a large file): what many
// share, they share by pointer.
type binding struct {
	key       cache.Key // key.Name is the credential's name
	src       credential.Source
	*format   // shared by every credential with the same header and format
	formatted atomic.Pointer[formatted]
	sources   *sourcePolicy      // nil: any caller
	changer   credential.Changer // non-nil for sources whose value can change in place
	checks    *checkCounts       // this credential's Check counts (checks.go)
}

// format is a header name (lower-case) and the value's format split around
// {token}.
type format struct {
	header, prefix, suffix string
}

// formatted memoises the header value of the current token so the hit path
// does not build the same string on every request.
type formatted struct{ token, value string }

// maxOpenNamed is how many credentials without allowed_sources the start-up
// warning names; the count covers the rest (`tokenbroker validate` lists all).
const maxOpenNamed = 20

// New compiles cfg. sources must hold a Source for every credential in cfg.
func New(cfg *config.Config, sources map[string]credential.Source, tokens *cache.Tokens, log *zap.Logger, m *Metrics) (*Filter, error) {
	if log == nil {
		log = zap.NewNop()
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	f := &Filter{
		bindings:     make(map[string]*binding, len(cfg.Credentials)),
		defaultAllow: cfg.DefaultAction == "allow",
		tokens:       tokens,
		log:          log,
		m:            m,
	}
	var open []string // credentials without allowed_sources
	// Most credentials share a header and a format: one copy of each
	// distinct pair (the header lower-cased once), not one per credential.
	formats := map[[2]string]*format{}
	for name, c := range cfg.Credentials {
		src, ok := sources[name]
		if !ok {
			return nil, errors.New("filter: no token source for credential " + name)
		}
		changer, _ := src.(credential.Changer)
		// A static value costs no mint: it stays out of the fleet's shared
		// tier, so Redis never holds a copy of it.
		// Hashed: a lookup then reads no byte of the ID (table.go).
		key := cache.Key{ID: c.Identity(), Name: name, Local: c.Type == "static"}.Hashed()
		fm, ok := formats[[2]string{c.Header, c.Format}]
		if !ok {
			prefix, suffix, _ := strings.Cut(c.Format, "{token}")
			fm = &format{header: strings.ToLower(c.Header), prefix: prefix, suffix: suffix} // HTTP/2 and Envoy use lower-case names
			formats[[2]string{c.Header, c.Format}] = fm
		}
		f.bindings[name] = &binding{
			key:     key,
			src:     src,
			format:  fm,
			sources: newSourcePolicy(c.AllowedSources),
			changer: changer,
			checks:  m.counts(name),
		}
		if len(c.AllowedSources) == 0 {
			open = append(open, name)
		}
	}
	if len(open) > 0 {
		// One line for all of them: a file of 100,000 such credentials
		// must not log 100,000 lines at every start and reload.
		slices.Sort(open)
		log.Warn("credentials without allowed_sources: any caller that reaches tokenbroker can use them",
			zap.Int("count", len(open)),
			zap.Strings("credentials", open[:min(len(open), maxOpenNamed)]))
	}
	f.routes = newTable(cfg.Routes, f.bindings)
	f.routeNames = nameRoutes(f.routes)
	return f, nil
}

// Key returns the cache key of the credential called name in this
// configuration: the identity its tokens are cached under.
func (f *Filter) Key(name string) (cache.Key, bool) {
	b, ok := f.bindings[name]
	if !ok {
		return cache.Key{}, false
	}
	return b.key, true
}

// Keys yields the cache key of every credential in this configuration
// (key.Name is the credential's name), in no particular order.
func (f *Filter) Keys() iter.Seq[cache.Key] {
	return func(yield func(cache.Key) bool) {
		for _, b := range f.bindings {
			if !yield(b.key) {
				return
			}
		}
	}
}

// Decide picks the credential for r and returns the header to inject, or a denial.
//
// The route is chosen on the canonical path (package canonpath). A path
// whose meaning depends on who decodes it is denied 403 "ambiguous path"
// when a credential could be at stake: the request names one through
// context_extensions, or some route names its host. For a host no route
// names, default_action decides as for any other unrouted request: no
// credential can be sent either way.
func (f *Filter) Decide(ctx context.Context, r *Request) Decision {
	switch {
	case r.Invalid != "":
		return f.malformed(r, r.Invalid)
	case len(r.Host) > MaxHostBytes:
		return f.malformed(r, ReasonHostTooLong)
	case len(r.Path) > MaxPathBytes:
		return f.malformed(r, ReasonPathTooLong)
	}
	path, pathOK := canonpath.Canonical(r.Path)
	b, remove, known := f.pick(r, path, pathOK)
	f.trace(ctx, r, path, b) // observe.go
	if b == nil {
		if known && !pathOK {
			f.m.deny(r, nil, AmbiguousPath, ReasonAmbiguousPath, r.Credential)
			return Decision{Status: http.StatusForbidden, Reason: ReasonAmbiguousPath}
		}
		if r.Credential != "" {
			f.m.deny(r, nil, UnknownCredential, ReasonUnknownCredential, r.Credential)
			return Decision{Status: http.StatusForbidden, Reason: ReasonUnknownCredential}
		}
		if f.defaultAllow {
			f.m.none.add(PassThrough)
			return Decision{Allowed: true}
		}
		f.m.deny(r, nil, NoRoute, ReasonNoRoute, "")
		return Decision{Status: http.StatusForbidden, Reason: ReasonNoRoute}
	}
	if !b.sources.allows(r.Principal, r.SourceAddress) {
		f.m.deny(r, b.checks, SourceNotAllowed, ReasonSourceNotAllowed, b.key.Name)
		// Anyone can send these: at most one line per credential per
		// interval, with the count since the last, and the caller's fields
		// clipped (a principal may be megabytes long).
		if n, ok := b.sources.deniedLog.Take(time.Now(), denialLogEvery); ok {
			f.log.Warn("source not allowed to use credential",
				zap.String("credential", b.key.Name),
				zap.String("principal", clip(r.Principal)),
				zap.String("source_address", clip(r.SourceAddress)),
				zap.String("host", clip(r.Host)),
				zap.Int64("denials", n))
		}
		return Decision{Status: http.StatusForbidden, Reason: ReasonSourceNotAllowed, Credential: b.key.Name}
	}
	if b.changer != nil && b.changer.Changed() {
		f.tokens.Invalidate(b.key)
	}
	tok, err := f.tokens.Held(ctx, b.key, b.src) // the held token: the filter reads its header only
	if err != nil {
		// Debug, not Warn: the cache already logs each failed mint once, and
		// an outage must not turn every denied request into a log line.
		f.log.Debug("no token for request",
			zap.String("credential", b.key.Name),
			zap.String("host", r.Host),
			zap.Error(err))
		reason, outcome := ReasonTokenUnavailable, TokenUnavailable
		if _, ok := errors.AsType[*budget.ExceededError](err); ok {
			reason, outcome = ReasonBudget, BudgetUsedUp
		}
		f.m.deny(r, b.checks, outcome, reason, b.key.Name)
		return Decision{Status: http.StatusServiceUnavailable, Reason: reason, Credential: b.key.Name}
	}
	b.checks.add(Allowed)
	return Decision{Allowed: true, Credential: b.key.Name, Header: Header{Name: b.header, Value: b.value(tok)}, Remove: remove}
}

// malformed denies a request that cannot be read or exceeds a bound.
func (f *Filter) malformed(r *Request, reason string) Decision {
	f.m.deny(r, nil, Malformed, reason, "")
	return Decision{Status: http.StatusForbidden, Reason: reason}
}

// pick returns the credential for r on its canonical path and, when a
// route chose it, the route's headers to remove. known reports whether a
// credential was at stake: r names one, or a route names r's host.
func (f *Filter) pick(r *Request, path string, pathOK bool) (b *binding, remove []string, known bool) {
	if r.Credential != "" {
		if !pathOK {
			return nil, nil, true
		}
		return f.bindings[r.Credential], nil, true
	}
	rt, known := f.routes.match(r.Host, path, r.Method, pathOK)
	if rt != nil {
		return rt.binding, rt.removes(), true
	}
	return nil, nil, known
}

func (b *binding) value(tok *credential.Token) string {
	// The source formatted the header at mint time. Check it has this
	// binding's format: a reload may change the format of a credential whose
	// identity, and so cached token, stayed the same.
	if h := tok.Header; len(h) == len(b.prefix)+len(tok.Value)+len(b.suffix) &&
		strings.HasPrefix(h, b.prefix) && strings.HasSuffix(h, b.suffix) &&
		h[len(b.prefix):len(h)-len(b.suffix)] == tok.Value {
		return h
	}
	token := tok.Value
	if m := b.formatted.Load(); m != nil && m.token == token {
		return m.value
	}
	v := b.prefix + token + b.suffix
	b.formatted.Store(&formatted{token: token, value: v})
	return v
}

// denialLogEvery is how often a refused caller may cause a log line per
// credential: a flood of refused requests costs one line per interval.
const denialLogEvery = 10 * time.Second
