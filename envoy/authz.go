// Package envoy speaks Envoy's ext_authz v3 gRPC protocol (and, in later
// files, the HTTP forward-auth dialects of other proxies). It turns wire
// requests into filter.Requests and filter.Decisions back into responses; it
// knows nothing about OAuth.
package envoy

import (
	"cmp"
	"context"
	"net/http"
	"sync/atomic"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tokenbroker/tokenbroker/filter"
	"github.com/tokenbroker/tokenbroker/telemetry"
)

// Decider is the part of filter.Filter the servers need.
type Decider interface {
	Decide(ctx context.Context, r *filter.Request) filter.Decision
}

// Current holds the decider in force; a configuration reload swaps it and
// in-flight requests finish on the one they loaded.
type Current struct{ p atomic.Pointer[holder] }

type holder struct{ d Decider }

// Store makes d the decider for requests that start from now on.
func (c *Current) Store(d Decider) { c.p.Store(&holder{d}) }

// Load returns the decider in force.
func (c *Current) Load() Decider { return c.p.Load().d }

// AuthorizationServer implements envoy.service.auth.v3.Authorization.
type AuthorizationServer struct {
	authv3.UnimplementedAuthorizationServer
	decider *Current
}

// NewAuthorizationServer answers Checks with the decider held in cur.
func NewAuthorizationServer(cur *Current) *AuthorizationServer {
	return &AuthorizationServer{decider: cur}
}

// ReasonInvalidUTF8 denies a Check whose strings are not UTF-8 (see checkCodec).
const ReasonInvalidUTF8 = "invalid UTF-8"

// filterDecisionNotUTF8 answers a Check whose response cannot be marshalled
// because the token is not UTF-8: a configuration problem, not the caller's.
var filterDecisionNotUTF8 = filter.Decision{Status: http.StatusServiceUnavailable, Reason: "token not valid UTF-8"}

// Shared read-only parts of responses: protobuf messages are safe to marshal
// concurrently, and sharing them keeps the hit path's allocations down.
var (
	appendFalse = wrapperspb.Bool(false)
	statusOK    = &rpcstatus.Status{Code: int32(code.Code_OK)}
	okEmpty     = &authv3.CheckResponse{
		Status:       statusOK,
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}},
	}
)

// Check decides one request. It never returns a Go error for a decision: an
// error would take Envoy's failure path (status_on_error or, worse,
// failure_mode_allow), so "no token" is an explicit 503 denial instead.
func (s *AuthorizationServer) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	if telemetry.Enabled() {
		return s.tracedCheck(ctx, req) // observe.go
	}
	return s.check(ctx, req)
}

func (s *AuthorizationServer) check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	r := RequestFromCheck(req)
	return Response(s.decider.Load().Decide(ctx, &r)), nil
}

// RequestFromCheck extracts what the filter needs from a CheckRequest. It
// accepts request headers from either `headers` or `header_map` (Envoy's
// encode_raw_headers) and tolerates any field being absent.
func RequestFromCheck(req *authv3.CheckRequest) filter.Request {
	attrs := req.GetAttributes()
	if attrs == unreadable {
		return filter.Request{Invalid: ReasonInvalidUTF8}
	}
	h := attrs.GetRequest().GetHttp()
	r := filter.Request{
		Host:       h.GetHost(),
		Path:       h.GetPath(),
		Method:     h.GetMethod(),
		Credential: attrs.GetContextExtensions()[filter.ContextExtensionKey],

		Principal:     attrs.GetSource().GetPrincipal(),
		SourceAddress: attrs.GetSource().GetAddress().GetSocketAddress().GetAddress(),
		Transport:     filter.TransportGRPC,
	}
	if r.Host != "" && r.Path != "" && r.Method != "" {
		return r
	}
	if hs := h.GetHeaders(); len(hs) > 0 {
		r.Host = cmp.Or(r.Host, hs[":authority"], hs["host"])
		r.Path = cmp.Or(r.Path, hs[":path"])
		r.Method = cmp.Or(r.Method, hs[":method"])
		return r
	}
	// encode_raw_headers: one pass over header_map, whatever its length (the
	// message as a whole is bounded by MaxCheckRequestBytes).
	var authority, host, path, method string
	for _, hv := range h.GetHeaderMap().GetHeaders() {
		var dst *string
		switch hv.GetKey() {
		case ":authority":
			dst = &authority
		case "host":
			dst = &host
		case ":path":
			dst = &path
		case ":method":
			dst = &method
		default:
			continue
		}
		if *dst == "" {
			*dst = cmp.Or(hv.GetValue(), string(hv.GetRawValue()))
		}
	}
	r.Host = cmp.Or(r.Host, authority, host)
	r.Path = cmp.Or(r.Path, path)
	r.Method = cmp.Or(r.Method, method)
	return r
}

// Response turns a decision into Envoy's answer. The injected header is set
// with BOTH append=false and append_action=OVERWRITE_IF_EXISTS_OR_ADD, which
// every Envoy version reads as "overwrite" (see envoy #43310/#43442), and is
// never listed in headers_to_remove, which Envoy applies after setting.
func Response(d filter.Decision) *authv3.CheckResponse {
	if d.Allowed {
		if d.Header.Name == "" {
			return okEmpty
		}
		return &authv3.CheckResponse{
			Status: statusOK,
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
				Headers: []*corev3.HeaderValueOption{{
					Header:       &corev3.HeaderValue{Key: d.Header.Name, Value: d.Header.Value},
					Append:       appendFalse,
					AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
				}},
				// The filter's shared slice, never containing the injected header:
				// no allocation when the route removes nothing.
				HeadersToRemove: d.Remove,
			}},
		}
	}
	c := code.Code_PERMISSION_DENIED
	if d.Status >= 500 {
		c = code.Code_UNAVAILABLE
	}
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(c), Message: d.Reason},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status: &typev3.HttpStatus{Code: typev3.StatusCode(d.Status)},
			Headers: []*corev3.HeaderValueOption{{
				Header:       &corev3.HeaderValue{Key: filter.ReasonHeader, Value: d.Reason},
				Append:       appendFalse,
				AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
			}},
		}},
	}
}
