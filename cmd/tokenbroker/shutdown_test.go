package main

import (
	"context"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// TestServeSIGTERMUnderLoad sends SIGTERM to the built binary while a
// bounded load of Checks runs. Clients behave like Envoy: they stop sending
// new Checks once health says NOT_SERVING. No Check may fail, and NOT_SERVING
// must come while the listener still accepts (shutdown.delay), not after.
func TestServeSIGTERMUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	_, url := newIdP(t)
	path := write(t, "tb.yaml", tbConfig(url, []string{"a"}, "a.example.com=a")+"shutdown:\n  delay: 2s\n  drain: 10s\n")
	p := startBinary(t, path)
	conn := dial(t, p.grpcAddr)
	l := &live{client: authv3.NewAuthorizationClient(conn)}
	if got := outcome(l.check(t, "a.example.com/")); got != "ok" {
		t.Fatal(got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	watch, err := healthpb.NewHealthClient(conn).Watch(watchCtx, &healthpb.HealthCheckRequest{Service: "envoy.service.auth.v3.Authorization"})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := watch.Recv(); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health %v %v", r, err)
	}

	notServing := make(chan struct{})
	const workers, perWorker = 4, 3000
	var failed, done atomic.Int64
	progress := make(chan struct{}, workers*perWorker)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range perWorker {
				select {
				case <-notServing:
					return // Envoy's health check took us out of rotation
				default:
				}
				cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
				r, err := l.client.Check(cctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
					Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Host: "a.example.com", Path: "/", Method: "GET"}},
				}})
				ccancel()
				if err != nil || outcome(r) != "ok" {
					failed.Add(1)
					t.Logf("failed Check: %v %v", err, r)
				}
				done.Add(1)
				progress <- struct{}{}
			}
		})
	}
	for range 50 { // load is in flight
		<-progress
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	r, err := watch.Recv()
	if err != nil || r.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("health after SIGTERM: %v %v", r, err)
	}
	close(notServing)
	stopWatch() // an open Watch stream would hold GracefulStop until shutdown.drain

	// NOT_SERVING came first: the listener still takes new connections.
	fresh := dial(t, p.grpcAddr)
	lf := &live{client: authv3.NewAuthorizationClient(fresh)}
	if got := outcome(lf.check(t, "a.example.com/")); got != "ok" {
		t.Fatalf("Check on a new connection during shutdown.delay: %s", got)
	}

	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d of %d Checks failed across SIGTERM", failed.Load(), done.Load())
	}
	select {
	case err := <-p.exited:
		if err != nil {
			t.Fatalf("exit: %v\n%s", err, p.logText())
		}
	case <-ctx.Done():
		t.Fatal("did not exit")
	}
	t.Logf("%d Checks across SIGTERM, 0 failed", done.Load())
}
