package envoy

import (
	"strings"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/reflection"
	protov2 "google.golang.org/protobuf/proto"
)

// ServiceName is the gRPC service Envoy calls; its health status is reported
// under this name and under "" (the whole server).
const ServiceName = "envoy.service.auth.v3.Authorization"

// MaxCheckRequestBytes bounds one CheckRequest (grpc-go's default, stated
// here so it is a decision): it caps the memory and the parsing a caller can
// make one Check cost. Envoy's default request-header limit is 60 KiB, so a
// CheckRequest is far smaller unless with_request_body is set, which
// tokenbroker does not need. A larger message is refused by gRPC itself with
// RESOURCE_EXHAUSTED, before any decision can be read: Envoy answers it with
// status_on_error (503 in the examples), never with failure_mode_allow.
const MaxCheckRequestBytes = 4 << 20

// NewGRPCServer returns a gRPC server with the Authorization service, the
// grpc.health.v1 service (SERVING until hs.Shutdown) and server reflection.
// opts come after tokenbroker's own and may override them.
func NewGRPCServer(cur *Current, hs *health.Server, opts ...grpc.ServerOption) *grpc.Server {
	own := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(MaxCheckRequestBytes),
		grpc.ForceServerCodecV2(checkCodec{encoding.GetCodecV2(proto.Name)}),
	}
	s := grpc.NewServer(append(own, opts...)...)
	authv3.RegisterAuthorizationServer(s, NewAuthorizationServer(cur))
	healthpb.RegisterHealthServer(s, hs)
	reflection.Register(s)
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(ServiceName, healthpb.HealthCheckResponse_SERVING)
	return s
}

// checkCodec is grpc-go's proto codec, except that a Check whose strings are
// not UTF-8 gets a decision instead of an error.
//
// protobuf-go refuses invalid UTF-8 in proto3 string fields both ways. Envoy
// (C++) sends header values and paths as they came, so without
// encode_raw_headers one Latin-1 header value made grpc-go fail the
// unmarshal of the request with INTERNAL before the handler ran, and Envoy
// took its error path. Such a request now reaches Check marked unreadable
// and is denied 403 "invalid UTF-8". The response side: the only string in a
// CheckResponse that does not come from tokenbroker's own constants is the
// injected header's value (a static value_file holding non-UTF-8 bytes); it
// cannot be marshalled, so that answer becomes a 503 denial.
type checkCodec struct{ encoding.CodecV2 }

// unreadable marks a CheckRequest whose wire form was not valid UTF-8: no
// request decoded from the wire can hold this pointer.
var unreadable = &authv3.AttributeContext{}

// notUTF8Response replaces a CheckResponse that cannot be marshalled.
var notUTF8Response = Response(filterDecisionNotUTF8)

func (c checkCodec) Unmarshal(data mem.BufferSlice, v any) error {
	err := c.CodecV2.Unmarshal(data, v)
	if req, ok := v.(*authv3.CheckRequest); ok && err != nil && invalidUTF8(err) {
		protov2.Reset(req)
		req.Attributes = unreadable
		return nil
	}
	return err
}

func (c checkCodec) Marshal(v any) (mem.BufferSlice, error) {
	out, err := c.CodecV2.Marshal(v)
	if _, ok := v.(*authv3.CheckResponse); ok && err != nil && invalidUTF8(err) {
		return c.CodecV2.Marshal(notUTF8Response)
	}
	return out, err
}

// invalidUTF8 recognises protobuf-go's error for a string field that is not
// UTF-8 ("field X contains invalid UTF-8"); it has no sentinel to match.
// TestCheckInvalidUTF8 fails if the text changes.
func invalidUTF8(err error) bool { return strings.Contains(err.Error(), "invalid UTF-8") }
