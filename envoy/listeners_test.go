package envoy_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"

	"github.com/tokenbroker/tokenbroker/cache"
	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/credential"
	"github.com/tokenbroker/tokenbroker/envoy"
	"github.com/tokenbroker/tokenbroker/filter"
)

// listeners is tokenbroker's two real listeners on loopback, sharing one
// decider: the gRPC server (go-control-plane's generated client) and the
// HTTP forward-auth server (raw HTTP/1.1 over one kept-alive connection, so
// a test controls every byte of the request line and headers).
type listeners struct {
	cur    envoy.Current
	grpc   authv3.AuthorizationClient
	http   string // address of the forward-auth server
	conn   net.Conn
	reader *bufio.Reader
}

func startListeners(tb testing.TB) *listeners {
	tb.Helper()
	l := &listeners{}
	gs := envoy.NewGRPCServer(&l.cur, health.NewServer())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go func() { _ = gs.Serve(ln) }()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(envoy.NewForwardAuth(&l.cur, "/envoy", nil))
	hs.Config = envoy.NewForwardAuthServer(hs.Config.Handler)
	hs.Start()
	l.http = hs.Listener.Addr().String()
	tb.Cleanup(func() {
		if l.conn != nil {
			_ = l.conn.Close()
		}
		hs.Close()
		_ = conn.Close()
		gs.Stop()
	})
	l.grpc = authv3.NewAuthorizationClient(conn)
	return l
}

// rawHTTP sends one raw request (request line and headers, no body) and
// returns the status and the response headers, reconnecting when the
// server closed the connection (it does after a 400).
func (l *listeners) rawHTTP(tb testing.TB, method, target string, hdr ...string) (int, http.Header) {
	tb.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\n", method, target)
	for i := 0; i+1 < len(hdr); i += 2 {
		fmt.Fprintf(&b, "%s: %s\r\n", hdr[i], hdr[i+1])
	}
	b.WriteString("\r\n")
	for attempt := 0; ; attempt++ {
		if l.conn == nil {
			c, err := net.Dial("tcp", l.http)
			if err != nil {
				tb.Fatal(err)
			}
			l.conn, l.reader = c, bufio.NewReader(c)
		}
		resp, err := l.send(b.String())
		if err == nil {
			return resp.StatusCode, resp.Header
		}
		_ = l.conn.Close()
		l.conn = nil
		if attempt == 1 {
			tb.Fatalf("forward-auth request %q: %v", b.String(), err)
		}
	}
}

func (l *listeners) send(req string) (*http.Response, error) {
	if _, err := l.conn.Write([]byte(req)); err != nil {
		return nil, err
	}
	resp, err := http.ReadResponse(l.reader, nil)
	if err != nil {
		return nil, err
	}
	_ = resp.Body.Close() // bodies are a short JSON reason at most: read to the end by Close
	if resp.Close {
		_ = l.conn.Close()
		l.conn = nil
	}
	return resp, nil
}

// staticCredentials writes one value file per name ("key-NAME") and
// returns the YAML of static credentials reading them, in X-Api-Key.
// Files, not inline values: each credential then has its own identity.
func staticCredentials(tb testing.TB, names ...string) string {
	tb.Helper()
	dir := tb.TempDir()
	var b strings.Builder
	b.WriteString("credentials:\n")
	for _, n := range names {
		file := filepath.Join(dir, n)
		if err := os.WriteFile(file, []byte("key-"+n), 0o600); err != nil {
			tb.Fatal(err)
		}
		fmt.Fprintf(&b, "  %s: {type: static, value_file: %q, header: X-Api-Key, format: '{token}'}\n", n, file)
	}
	return b.String()
}

// staticDecider compiles yaml, whose credentials are all static, with the
// given token cache (shared across configurations in the fuzz test).
func staticDecider(tb testing.TB, tokens *cache.Tokens, yaml string) (*filter.Filter, error) {
	tb.Helper()
	cfg, err := config.Parse("static.yaml", []byte(yaml))
	if err != nil {
		return nil, err
	}
	sources := map[string]credential.Source{}
	for name, c := range cfg.Credentials {
		s, err := credential.NewStatic(c)
		if err != nil {
			return nil, err
		}
		sources[name] = s
	}
	return filter.New(cfg, sources, tokens, nil, nil)
}

func newTokens(tb testing.TB) *cache.Tokens {
	tb.Helper()
	tokens, err := cache.New(cache.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(tokens.Close)
	return tokens
}
