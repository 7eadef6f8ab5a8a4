package sds

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"sync"
	"syscall"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
)

// BenchmarkFanOut10k: 10,000 SDS subscribers of one credential on one
// process, each a stream ACKing like Envoy, over 100 connections (an egress
// gateway's many secrets, or Envoys sharing connections) or 1,000. Each
// iteration is one mint at the refresh point; it reports the time until
// every subscriber holds the new value (ms/fanout) and the heap per
// subscriber (B/subscriber: client and server together, as both run in this
// process, so an upper bound for the server's share).
func BenchmarkFanOut10k(b *testing.B) {
	for _, conns := range []int{100, 1000} {
		b.Run(fmt.Sprintf("conns=%d", conns), func(b *testing.B) { fanOut(b, conns, 10000/conns) })
	}
}

func fanOut(b *testing.B, conns, perConn int) {
	n := conns * perConn
	s := newStack(b, billingYAML, stackOpts{lifetime: 10 * time.Minute, quiet: true})
	s.sds.lim.perIdentity = n // every subscriber here shares one address; in a fleet each Envoy has its own

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan struct{}, n) // one per value a subscriber receives
	var wg sync.WaitGroup
	for range conns {
		conn := s.dial("")
		for range perConn {
			st, err := secretv3.NewSecretDiscoveryServiceClient(conn).StreamSecrets(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if err := st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resource.SecretType, ResourceNames: []string{"billing"}}); err != nil {
				b.Fatal(err)
			}
			wg.Go(func() { ackLoop(st, got) })
		}
	}
	waitAll(b, got, n)
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	perSub := float64(after.HeapInuse-before.HeapInuse) / float64(n)

	// FANOUT_CPUPROFILE=file profiles the fan-outs alone, without the
	// setup of 10,000 streams that -cpuprofile would mostly show.
	if path := os.Getenv("FANOUT_CPUPROFILE"); path != "" {
		f, err := os.Create(fmt.Sprintf("%s.conns%d", path, conns))
		if err != nil {
			b.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			b.Fatal(err)
		}
		defer func() { pprof.StopCPUProfile(); _ = f.Close() }()
	}
	var total time.Duration
	cpu0 := cpuTime(b)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		s.clock.Advance(s.lease("billing").RefreshAt.Sub(s.clock.Now())) // the timer mints and pushes
		waitAll(b, got, n)
		total += time.Since(start)
		s.settle()
	}
	b.StopTimer()
	cpu := cpuTime(b) - cpu0
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/fanout")
	// CPU time (this process: server and clients) per fan-out: unlike the
	// wall time, it does not grow with what else runs on the machine.
	b.ReportMetric(float64(cpu.Milliseconds())/float64(b.N), "cpu-ms/fanout")
	b.ReportMetric(perSub, "B/subscriber")
	cancel()
	wg.Wait()
}

// ackLoop receives responses on st, ACKs each, and reports it on got.
func ackLoop(st grpc.BidiStreamingClient[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse], got chan<- struct{}) {
	for {
		resp, err := st.Recv()
		if err != nil {
			return
		}
		if st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resource.SecretType, ResourceNames: []string{"billing"},
			VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}) != nil {
			return
		}
		got <- struct{}{}
	}
}

func waitAll(b *testing.B, got <-chan struct{}, n int) {
	b.Helper()
	timeout := time.After(2 * time.Minute) // a failure guard: the loop ends by itself
	for range n {
		select {
		case <-got:
		case <-timeout:
			b.Fatal("not every subscriber got the value")
		}
	}
}

// cpuTime is the CPU time this process has used, user and system.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
