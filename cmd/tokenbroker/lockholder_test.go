package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tokenbroker/tokenbroker/internal/devidp"
	"github.com/tokenbroker/tokenbroker/internal/testpeer"
)

// gatedIdP is the dev IdP with a trap: once armed, the next token request
// is held until its client goes away (the replica that sent it is killed)
// and is never answered. arrived receives one value when it is caught.
type gatedIdP struct {
	*devidp.Server
	armed   atomic.Bool
	arrived chan struct{}
	done    chan struct{} // closed when the test ends: no handler outlives it
}

func newGatedIdP(t *testing.T, lifetime time.Duration) (*gatedIdP, string) {
	t.Helper()
	g := &gatedIdP{
		Server:  devidp.New(devidp.Options{Clients: map[string]string{fleetClient: fleetSecret}, Lifetime: lifetime}),
		arrived: make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	srv := httptest.NewServer(g)
	t.Cleanup(func() {
		close(g.done)
		srv.Close()
	})
	return g, srv.URL
}

func (g *gatedIdP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/oauth/token" && g.armed.CompareAndSwap(true, false) {
		// Read the form first: the server notices a closed connection (and
		// cancels r.Context) only once the body has been consumed.
		_, _ = io.Copy(io.Discard, r.Body)
		g.arrived <- struct{}{}
		select {
		case <-r.Context().Done():
		case <-g.done:
		}
		return
	}
	g.Server.ServeHTTP(w, r)
}

// startFleet is startReplicas with the cache block given whole (cacheBlock
// holds its indented keys).
func startFleet(t *testing.T, n int, idpURL, cacheBlock string) *replicaSet {
	t.Helper()
	cfg := write(t, "tb.yaml", `
listen:
  grpc: 127.0.0.1:0
  admin: 127.0.0.1:0
credentials:
  fleet:
    token_url: `+idpURL+`/oauth/token
    client_id: `+fleetClient+`
    client_secret: ${FLEET_SECRET}
routes:
  - host: api.example.com
    credential: fleet
cache:
`+cacheBlock)
	rs := &replicaSet{}
	for range n {
		p := startBinary(t, cfg, "FLEET_SECRET="+fleetSecret)
		rs.procs = append(rs.procs, p)
		rs.clients = append(rs.clients, authv3.NewAuthorizationClient(dial(t, p.grpcAddr)))
	}
	return rs
}

// metricValue scrapes one series from a replica's /metrics (0 when absent).
func metricValue(t *testing.T, adminAddr, family string, labels map[string]string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + adminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, m := range mfs[family].GetMetric() {
		match := 0
		for _, lp := range m.GetLabel() {
			if v, ok := labels[lp.GetName()]; ok && v == lp.GetValue() {
				match++
			}
		}
		if match == len(labels) {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// waitFor polls cond (a scrape, a Check) until it holds; the ticker paces
// the polling, it is not the synchronisation.
func waitFor(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, limit)
		}
		<-tick.C
	}
}

// TestFleetProcessesDeadLockHolder: three tokenbroker processes share Redis.
// The replica that takes the fleet mint lock is killed (SIGKILL) while its
// request sits at the IdP; the two survivors are already waiting for its
// token. When the dead holder's lock expires they contend for it again: the
// fleet mints once more in all, on a cold start and on a refresh alike, and
// no survivor's Check fails.
func TestFleetProcessesDeadLockHolder(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	rdb := testpeer.StartRedis(t)
	const lockTTL = "2s"
	for _, refresh := range []bool{false, true} {
		name := "cold"
		if refresh {
			name = "refresh"
		}
		t.Run(name, func(t *testing.T) {
			flushRedis(t, rdb.Addr)
			// 20s tokens, 1s margin, refresh_ahead 0.8: a refresh is due 3.8s
			// after the mint, with 15s left to finish it.
			idp, idpURL := newGatedIdP(t, 20*time.Second)
			rs := startFleet(t, 3, idpURL, "  expiry_margin: 1s\n  refresh_ahead: 0.8\n"+fleetRedisBlock(t, rdb.Addr)+"    lock_ttl: "+lockTTL+"\n")
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			holder := &replicaSet{procs: rs.procs[:1], clients: rs.clients[:1]}
			survivors := &replicaSet{procs: rs.procs[1:], clients: rs.clients[1:]}

			var first string
			var mintsBefore int64
			if refresh {
				failed, seen := rs.checks(ctx, 300)
				if failed != 0 || idp.Mints() != 1 {
					t.Fatalf("warm-up: %d failed, %d mints", failed, idp.Mints())
				}
				for v := range seen[0] {
					first = v
				}
				mintsBefore = 1
			}
			contended := func(p *process) float64 {
				return metricValue(t, p.adminAddr, "tokenbroker_l2_lock_total", map[string]string{"credential": "fleet", "result": "contended"})
			}
			base := []float64{contended(survivors.procs[0]), contended(survivors.procs[1])}

			// Only the holder is asked first, so it is the one that takes the lock.
			idp.armed.Store(true)
			var holderChecks sync.WaitGroup
			tick := time.NewTicker(100 * time.Millisecond) // load pacing
			caught := false
			for deadline := time.Now().Add(30 * time.Second); !caught; {
				// Cold: the Check waits for the mint held at the IdP. Refresh:
				// it is served at once and the refresh runs behind it.
				holderChecks.Go(func() { holder.checks(ctx, 1) })
				select {
				case <-idp.arrived:
					caught = true
				case <-tick.C:
					if time.Now().After(deadline) {
						t.Fatal("the holder's mint never reached the IdP")
					}
				}
			}
			tick.Stop()

			// The survivors ask now and find the lock taken.
			type result struct {
				failed int
				seen   []map[string]int
			}
			results := make(chan result, 1)
			var wg sync.WaitGroup
			wg.Go(func() {
				failed, seen := survivors.checks(ctx, 200)
				results <- result{failed, seen}
			})
			waitFor(t, "both survivors waiting on the holder's lock", 20*time.Second, func() bool {
				return contended(survivors.procs[0]) > base[0] && contended(survivors.procs[1]) > base[1]
			})
			if err := holder.procs[0].cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			<-holder.procs[0].exited
			holderChecks.Wait()
			wg.Wait()
			r := <-results
			if r.failed != 0 {
				t.Fatalf("%d of 200 survivor Checks failed", r.failed)
			}
			if refresh {
				// The survivors keep serving the old token while the refresh
				// waits out the dead holder's lock; then both pick up the new one.
				waitFor(t, "both survivors serving the refreshed token", 30*time.Second, func() bool {
					failed, seen := survivors.checks(ctx, 20)
					if failed != 0 {
						t.Fatalf("%d survivor Checks failed during the refresh", failed)
					}
					return len(seen[0]) == 1 && len(seen[1]) == 1 && seen[0][first] == 0 && seen[1][first] == 0
				})
			} else {
				var tokens = map[string]bool{}
				for _, s := range r.seen {
					for v := range s {
						tokens[v] = true
					}
				}
				if len(tokens) != 1 {
					t.Fatalf("survivors injected %d different tokens, want the one the fleet minted", len(tokens))
				}
			}
			if extra := idp.Mints() - mintsBefore; extra != 1 {
				t.Fatalf("holder killed mid-mint: the 2 survivors minted %d times, want 1", extra)
			}
			for _, p := range survivors.procs {
				if n := metricValue(t, p.adminAddr, "tokenbroker_l2_lock_total", map[string]string{"credential": "fleet", "result": "timed_out"}); n != 0 {
					t.Fatalf("a survivor minted without the lock (timed_out = %v)", n)
				}
			}
			t.Logf("%s: holder killed mid-mint, 2 survivors: 1 more mint", name)
		})
	}
}
