package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
)

// load is a bounded load of requests against one address that the test can
// move, as Envoy moves its cluster when a listener's address changes.
// Every worker sends at most perWorker requests, so a load always ends.
type load struct {
	t       *testing.T
	workers int
	send    func(addr string) error

	target atomic.Pointer[string]
	gen    atomic.Int64  // bumped by moveTo after target
	acks   chan struct{} // one per worker and move, once it has sent to the new target

	failed, done atomic.Int64
	progress     chan struct{} // one value per request answered
	stop         chan struct{}
	allDone      chan struct{}

	mu     sync.Mutex // guards byAddr and errs
	byAddr map[string]int
	errs   []string
}

// startLoad starts workers sending perWorker requests each to addr.
func startLoad(t *testing.T, workers, perWorker int, addr string, send func(addr string) error) *load {
	t.Helper()
	l := &load{t: t, workers: workers, send: send, acks: make(chan struct{}, workers*16),
		progress: make(chan struct{}, workers*perWorker), stop: make(chan struct{}), allDone: make(chan struct{}),
		byAddr: map[string]int{}}
	l.target.Store(&addr)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			var acked int64
			for range perWorker {
				select {
				case <-l.stop:
					return
				default:
				}
				gen := l.gen.Load()
				to := *l.target.Load() // at least as new as gen
				err := l.send(to)
				l.mu.Lock()
				l.byAddr[to]++
				if err != nil {
					l.failed.Add(1)
					if len(l.errs) < 5 {
						l.errs = append(l.errs, fmt.Sprintf("%s: %v", to, err))
					}
				}
				l.mu.Unlock()
				l.done.Add(1)
				l.progress <- struct{}{}
				if gen > acked {
					acked = gen
					l.acks <- struct{}{}
				}
			}
		})
	}
	go func() { wg.Wait(); close(l.allDone) }()
	t.Cleanup(func() { l.finish() })
	return l
}

// await waits until n more requests are answered (or the load has ended).
func (l *load) await(n int) {
	for range n {
		select {
		case <-l.progress:
		case <-l.allDone:
			return
		}
	}
}

// moveTo sends the load to addr from now on, and returns once every worker
// has sent a request there (or the load has ended).
func (l *load) moveTo(addr string) {
	l.target.Store(&addr)
	l.gen.Add(1)
	for range l.workers {
		select {
		case <-l.acks:
		case <-l.allDone:
			return
		}
	}
}

// finish stops the load and waits for its workers.
func (l *load) finish() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	<-l.allDone
}

// requireNoFailures stops the load and fails the test if any request failed.
func (l *load) requireNoFailures(what string) {
	l.t.Helper()
	l.finish()
	l.mu.Lock()
	defer l.mu.Unlock()
	if f := l.failed.Load(); f != 0 {
		l.t.Fatalf("%s: %d of %d requests failed: %s", what, f, l.done.Load(), strings.Join(l.errs, "; "))
	}
	l.t.Logf("%s: %d requests, 0 failed (%v)", what, l.done.Load(), l.byAddr)
}

func (l *load) sentTo(addr string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.byAddr[addr]
}

// grpcChecks sends Checks for host over one connection per address.
type grpcChecks struct {
	t    *testing.T
	opts []grpc.DialOption // nil: plaintext
	mu   sync.Mutex
	conn map[string]authv3.AuthorizationClient
}

func (g *grpcChecks) client(addr string) authv3.AuthorizationClient {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.conn == nil {
		g.conn = map[string]authv3.AuthorizationClient{}
	}
	if c, ok := g.conn[addr]; ok {
		return c
	}
	var conn *grpc.ClientConn
	if g.opts == nil {
		conn = dial(g.t, addr)
	} else {
		var err error
		if conn, err = grpc.NewClient(addr, g.opts...); err != nil {
			g.t.Fatal(err)
		}
		g.t.Cleanup(func() { _ = conn.Close() })
	}
	c := authv3.NewAuthorizationClient(conn)
	g.conn[addr] = c
	return c
}

// check asks addr about host and wants it allowed with a token.
func (g *grpcChecks) check(addr, host string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r, err := g.client(addr).Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Host: host, Path: "/", Method: "GET"}},
	}})
	if err != nil {
		return err
	}
	if got := outcome(r); got != "ok" {
		return fmt.Errorf("%s: %s", host, got)
	}
	return nil
}

// forwardAuth asks a forward-auth listener about host, as nginx does, and
// wants a 200 with a token.
func forwardAuth(c *http.Client, addr, host string) error {
	req, err := http.NewRequest("GET", "http://"+addr+"/auth", nil)
	if err != nil {
		return err
	}
	req.Host = host
	req.Header.Set("X-Original-URI", "/")
	req.Header.Set("X-Original-Method", "GET")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Authorization"), "Bearer ") {
		return fmt.Errorf("forward-auth %s: %d %s", host, resp.StatusCode, resp.Header.Get("X-Tokenbroker-Reason"))
	}
	return nil
}

// brokerToken asks the broker at addr for a token and returns the status.
func brokerToken(c *http.Client, addr, clientID, secret string, params url.Values) (int, error) {
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {clientID}, "client_secret": {secret}}
	for k, v := range params {
		form[k] = v
	}
	resp, err := c.PostForm("http://"+addr+"/oauth/token", form)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// get wants a 200 from url.
func get(c *http.Client, u string) error {
	resp, err := c.Get(u)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("GET %s: %d", u, resp.StatusCode)
	}
	return nil
}
