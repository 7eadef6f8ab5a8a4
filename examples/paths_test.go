package examples_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"testing"
)

// proxyAmbiguousPaths are sent, byte for byte, to a real proxy in front of
// tokenbroker (routes: billing.example.com /v1). Each could reach /admin,
// or something else than /v1, at an upstream that resolves it.
var proxyAmbiguousPaths = []string{
	"/v1/../admin", "/v1/%2e%2e/admin", "/v1/%2E%2e/admin", "/v1/.%2e/admin", "/v1/..;/admin",
	"/v1;x/../admin", "/v1/./x", "/v1%2f..%2fadmin", "/v1%2F..%2Fadmin", "/v1%5c..%5cadmin",
	"/v1\\..\\admin", "/v1/%252e%252e/admin", "/v1/%c0%ae%c0%ae/admin", "/v1/%00", "/v1/..%00/admin",
}

// rawStatus sends one request line as given (no client-side cleaning) and
// returns the proxy's status.
func rawStatus(t *testing.T, proxy, host, target string) int {
	t.Helper()
	c, err := net.Dial("tcp", proxy)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer forged\r\nConnection: close\r\n\r\n", target, host)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%s: %v", target, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// ambiguousPathScenario: through the proxy, no ambiguous spelling of a /v1
// path reaches the upstream; each is refused by the proxy itself (400) or
// by tokenbroker (403 "ambiguous path"). The log says which, per proxy:
// that is what README "Path rules" reports of each.
func ambiguousPathScenario(t *testing.T, up *echo, proxy string) {
	t.Helper()
	before := len(up.seen())
	for _, p := range proxyAmbiguousPaths {
		code := rawStatus(t, proxy, "billing.example.com", p)
		switch code {
		case http.StatusBadRequest, http.StatusForbidden:
			t.Logf("%-28q → %d", p, code)
		default:
			t.Errorf("%q: proxy answered %d", p, code)
		}
	}
	if n := len(up.seen()) - before; n != 0 {
		t.Fatalf("%d ambiguous requests reached the upstream", n)
	}
	// A canonical spelling still goes through, with the token.
	if code := rawStatus(t, proxy, "billing.example.com", "/v1//invoices?next=/../admin"); code != 200 {
		t.Fatalf("canonical path: %d", code)
	}
}
