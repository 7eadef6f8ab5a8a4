package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"

	"github.com/tokenbroker/tokenbroker/internal/devidp"
	"github.com/tokenbroker/tokenbroker/internal/testpeer"
)

// sdsStream is one SotW SDS subscription to one credential, driven as
// Envoy drives it: every response is ACKed.
type sdsStream struct {
	s      secretv3.SecretDiscoveryService_StreamSecretsClient
	name   string
	cancel context.CancelFunc
}

func openSDS(ctx context.Context, conn *grpc.ClientConn, name string) (*sdsStream, error) {
	ctx, cancel := context.WithCancel(ctx)
	st, err := secretv3.NewSecretDiscoveryServiceClient(conn).StreamSecrets(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	err = st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resource.SecretType, ResourceNames: []string{name}})
	if err != nil && err != io.EOF {
		cancel()
		return nil, err
	}
	return &sdsStream{s: st, name: name, cancel: cancel}, nil
}

// next returns the value of the next response and ACKs it.
func (x *sdsStream) next() (string, error) {
	resp, err := x.s.Recv()
	if err != nil {
		return "", err
	}
	if len(resp.GetResources()) != 1 {
		return "", fmt.Errorf("%d resources", len(resp.GetResources()))
	}
	var sec tlsv3.Secret
	if err := resp.GetResources()[0].UnmarshalTo(&sec); err != nil {
		return "", err
	}
	err = x.s.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resource.SecretType, ResourceNames: []string{x.name},
		VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()})
	return sec.GetGenericSecret().GetSecret().GetInlineString(), err
}

// TestSDSFleetOneMintOneValue: 1,000 SDS subscribers spread over three
// tokenbroker processes sharing a real Redis get one value — the one a
// Check injects — from one mint; across the token's refresh every
// subscriber gets the next value, again from one mint, with no Check.
func TestSDSFleetOneMintOneValue(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	const subscribers = 1000
	rdb := testpeer.StartRedis(t)
	// 12s tokens, 1s margin, refresh_ahead 0.5: refresh from 5.5s after minting.
	idp := devidp.New(devidp.Options{Clients: map[string]string{fleetClient: fleetSecret}, Lifetime: 12 * time.Second})
	idpSrv := httptest.NewServer(idp)
	defer idpSrv.Close()
	rs := startReplicas(t, 3, idpSrv.URL, fleetRedisBlock(t, rdb.Addr))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	start := time.Now() // the mint comes after: its usable end is after start + 11s
	// A few connections per process, many streams each, as egress Envoys.
	var conns []*grpc.ClientConn
	for _, p := range rs.procs {
		for range 4 {
			conns = append(conns, dial(t, p.grpcAddr))
		}
	}
	streams := make([]*sdsStream, subscribers)
	values := make([]string, subscribers)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures []error
	fail := func(err error) {
		mu.Lock()
		failures = append(failures, err)
		mu.Unlock()
	}
	for i := range streams {
		wg.Go(func() {
			st, err := openSDS(ctx, conns[i%len(conns)], "fleet")
			if err != nil {
				fail(err)
				return
			}
			streams[i] = st
			if values[i], err = st.next(); err != nil {
				fail(err)
			}
		})
	}
	wg.Wait()
	defer func() {
		for _, st := range streams {
			if st != nil {
				st.cancel()
			}
		}
	}()
	if len(failures) > 0 {
		t.Fatalf("%d of %d subscriptions failed, first: %v", len(failures), subscribers, failures[0])
	}
	if got := idp.Mints(); got != 1 {
		t.Fatalf("%d subscribers over 3 processes: %d mints, want 1", subscribers, got)
	}
	for i, v := range values {
		if v != values[0] || !strings.HasPrefix(v, "Bearer ") {
			t.Fatalf("subscriber %d got another value", i)
		}
	}
	// What a Check on any process injects is the pushed value, byte for byte.
	for i, c := range rs.clients {
		resp, err := c.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Host: "api.example.com", Path: "/", Method: "GET"}},
		}})
		if err != nil || len(resp.GetOkResponse().GetHeaders()) != 1 || resp.GetOkResponse().GetHeaders()[0].GetHeader().GetValue() != values[0] {
			t.Fatalf("Check on process %d does not inject the pushed value: %v", i, err)
		}
	}
	idp.SetLifetime(time.Hour) // the refreshed token lives long: one refresh in this test

	// The refresh: every subscriber gets a new value, from one more mint,
	// before the old token's usable end (12s − 1s margin after the mint).
	deadline := start.Add(11 * time.Second)
	for i, st := range streams {
		wg.Go(func() {
			v, err := st.next()
			switch {
			case err != nil:
				fail(err)
			case v == values[i] || !strings.HasPrefix(v, "Bearer "):
				fail(fmt.Errorf("subscriber %d: no new token", i))
			default:
				values[i] = v
			}
		})
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d of %d subscribers missed the refresh, first: %v", len(failures), subscribers, failures[0])
	}
	if time.Now().After(deadline) {
		t.Fatalf("the refreshed value arrived after the old token's usable end")
	}
	if got := idp.Mints(); got != 2 {
		t.Fatalf("across the refresh: %d mints in total, want 2", got)
	}
	for i, v := range values {
		if v != values[0] {
			t.Fatalf("after the refresh subscriber %d has another value", i)
		}
	}
	resp, err := http.Get("http://" + rs.procs[0].adminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`tokenbroker_sds_subscribers{credential="fleet"}`, `tokenbroker_sds_pushes_total{credential="fleet",value="token"}`, "tokenbroker_sds_push_lag_seconds_count"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	for _, p := range rs.procs {
		for _, v := range values[:1] {
			if strings.Contains(p.logText(), strings.TrimPrefix(v, "Bearer ")) || strings.Contains(string(body), strings.TrimPrefix(v, "Bearer ")) {
				t.Fatal("a token in the logs or metrics")
			}
		}
	}
	t.Logf("%d SDS subscribers on 3 processes with Redis: 1 mint cold, 1 more across the refresh, one value everywhere", subscribers)
}

// TestSDSStreamsDoNotHoldTheDrain: SIGTERM with SDS subscribers open ends
// their streams cleanly and the process exits long before shutdown.drain.
func TestSDSStreamsDoNotHoldTheDrain(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	idp := devidp.New(devidp.Options{Clients: map[string]string{fleetClient: fleetSecret}, Lifetime: time.Hour})
	idpSrv := httptest.NewServer(idp)
	defer idpSrv.Close()
	cfg := write(t, "tb.yaml", `
listen:
  grpc: 127.0.0.1:0
  admin: 127.0.0.1:0
credentials:
  fleet:
    token_url: `+idpSrv.URL+`/oauth/token
    client_id: `+fleetClient+`
    client_secret: ${FLEET_SECRET}
shutdown:
  drain: 30s
`)
	p := startBinary(t, cfg, "FLEET_SECRET="+fleetSecret)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn := dial(t, p.grpcAddr)
	st, err := openSDS(ctx, conn, "fleet")
	if err != nil {
		t.Fatal(err)
	}
	defer st.cancel()
	if v, err := st.next(); err != nil || !strings.HasPrefix(v, "Bearer ") {
		t.Fatalf("subscribe: %v", err)
	}
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if _, err := st.s.Recv(); err != io.EOF {
		t.Fatalf("stream ended with %v, want a clean end", err)
	}
	select {
	case err := <-p.exited:
		if err != nil {
			t.Fatalf("exit: %v\n%s", err, p.logText())
		}
	case <-ctx.Done():
		t.Fatal("no exit")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("exit took %v: the SDS stream held the drain", d)
	}
	if strings.Contains(p.logText(), "drain deadline passed") {
		t.Fatal("drain deadline reached")
	}
}
