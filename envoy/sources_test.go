package envoy_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

const paymentsYAML = `
credentials:
  billing:
    token_url: IDP/oauth/token
    client_id: svc-billing
    client_secret: ${BILLING_SECRET}
    allowed_sources:
      - spiffe://cluster.local/ns/payments/sa/*
      - 10.20.0.0/16
routes:
  - host: billing.example.com
    credential: billing
    remove_headers: [X-Api-Key, cookie]
`

// sourceReq is a Check from a caller with this principal and address.
func sourceReq(principal, addr string) *authv3.CheckRequest {
	req := checkReq("billing.example.com", "/v1/invoices")
	req.Attributes.Source = &authv3.AttributeContext_Peer{
		Principal: principal,
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: addr, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 41000},
		}}},
	}
	return req
}

func TestCheckAllowedSources(t *testing.T) {
	s := newStack(t, paymentsYAML)
	ctx := context.Background()
	for _, tc := range []struct {
		name, principal, addr string
		allowed               bool
	}{
		{"payments workload", "spiffe://cluster.local/ns/payments/sa/checkout", "10.9.0.4", true},
		{"address in CIDR, no principal", "", "10.20.3.4", true},
		{"other namespace", "spiffe://cluster.local/ns/web/sa/frontend", "10.9.0.5", false},
		{"no identity at all", "", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := s.client.Check(ctx, sourceReq(tc.principal, tc.addr))
			if err != nil {
				t.Fatal(err)
			}
			if !tc.allowed {
				denied(t, resp, 403, "source not allowed")
				return
			}
			injected(t, resp)
			if got := resp.GetOkResponse().GetHeadersToRemove(); !slices.Equal(got, []string{"x-api-key", "cookie"}) {
				t.Fatalf("headers_to_remove = %v", got)
			}
		})
	}
	if n := s.idp.Requests(); n != 1 {
		t.Fatalf("IdP asked %d times, want 1 (denied callers must not cause mints)", n)
	}
	logs := s.logText()
	if !strings.Contains(logs, "source not allowed") || !strings.Contains(logs, "spiffe://cluster.local/ns/web/sa/frontend") {
		t.Fatalf("denial not logged with the principal:\n%s", logs)
	}
	if strings.Contains(logs, "devidp.") || strings.Contains(logs, secret) {
		t.Fatal("a token or secret reached the logs")
	}
}

func TestRemoveHeadersNeverInjectedHeader(t *testing.T) {
	// remove_headers may not name the injected header (config refuses it);
	// a context-extension credential has no route and removes nothing.
	s := newStack(t, paymentsYAML)
	req := sourceReq("spiffe://cluster.local/ns/payments/sa/x", "")
	req.Attributes.ContextExtensions = map[string]string{"credential": "billing"}
	resp, err := s.client.Check(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	injected(t, resp)
	if got := resp.GetOkResponse().GetHeadersToRemove(); len(got) != 0 {
		t.Fatalf("headers_to_remove = %v", got)
	}
}
