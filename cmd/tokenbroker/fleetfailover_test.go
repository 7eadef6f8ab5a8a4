package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/devidp"
	"github.com/tokenbroker/tokenbroker/internal/testpeer"
)

// failoverTier is a Redis deployment with a master to kill: a Cluster or
// a Sentinel set.
type failoverTier struct {
	redisBlock string // cache.redis: addrs (and master_name)
	// tokenMaster returns the master holding key (a Redis key name).
	tokenMaster func(t *testing.T, key string) *testpeer.Redis
	// waitPromoted returns when the tier serves that master's keys again.
	waitPromoted func(t *testing.T) time.Time
	// keys lists the Redis key names matching pattern on every live node.
	keys func(t *testing.T, pattern string) []string
}

func clusterTier(t *testing.T, c *testpeer.Cluster) failoverTier {
	return failoverTier{
		redisBlock: "    addrs: [" + strings.Join(c.Addrs(), ", ") + "]\n",
		tokenMaster: func(t *testing.T, key string) *testpeer.Redis {
			slot := c.Slot(key)
			// The lock (and every key of the credential) shares the token's slot.
			if lock := strings.Replace(key, ":token:", ":lock:", 1); c.Slot(lock) != slot {
				t.Fatalf("token %s in slot %d, its lock %s in slot %d", key, slot, lock, c.Slot(lock))
			}
			return c.MasterOf(slot)
		},
		waitPromoted: func(t *testing.T) time.Time { return c.WaitHealthy(30 * time.Second) },
		keys: func(t *testing.T, pattern string) []string {
			seen := map[string]bool{}
			for _, n := range c.Nodes {
				if !n.Alive() {
					continue
				}
				ks, _ := n.Client().Keys(context.Background(), pattern).Result()
				for _, k := range ks {
					seen[k] = true
				}
			}
			var out []string
			for k := range seen {
				out = append(out, k)
			}
			return out
		},
	}
}

func sentinelTier(t *testing.T, s *testpeer.Sentinel) failoverTier {
	return failoverTier{
		redisBlock:   "    addrs: [" + strings.Join(s.Addrs(), ", ") + "]\n    master_name: " + testpeer.SentinelMaster + "\n",
		tokenMaster:  func(*testing.T, string) *testpeer.Redis { return s.Master },
		waitPromoted: func(t *testing.T) time.Time { return s.WaitPromoted(30 * time.Second) },
		keys: func(t *testing.T, pattern string) []string {
			n := s.Master
			if !n.Alive() {
				n = s.Replica
			}
			ks, _ := n.Client().Keys(context.Background(), pattern).Result()
			return ks
		},
	}
}

// steadyLoad runs rounds of Checks on a set of replicas until halted.
type steadyLoad struct {
	stop, done chan struct{}

	mu            sync.Mutex // guards the fields below
	failed, total int
	last          []map[string]int // header values of the latest round, per replica
}

func startSteadyLoad(ctx context.Context, rs *replicaSet) *steadyLoad {
	l := &steadyLoad{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		tick := time.NewTicker(20 * time.Millisecond) // load pacing
		defer tick.Stop()
		for {
			failed, seen := rs.checks(ctx, 10*len(rs.clients))
			l.mu.Lock()
			l.failed, l.total, l.last = l.failed+failed, l.total+10*len(rs.clients), seen
			l.mu.Unlock()
			select {
			case <-l.stop:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return l
}

// converged returns the one token every replica injected in the latest
// round, or "" while they differ.
func (l *steadyLoad) converged() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	one := ""
	for _, s := range l.last {
		if len(s) != 1 {
			return ""
		}
		for v := range s {
			if one != "" && v != one {
				return ""
			}
			one = v
		}
	}
	return one
}

func (l *steadyLoad) halt() (failed, total int) {
	close(l.stop)
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.failed, l.total
}

func l2Lookups(t *testing.T, rs *replicaSet, result string) float64 {
	var n float64
	for _, p := range rs.procs {
		n += metricValue(t, p.adminAddr, "tokenbroker_l2_lookups_total", map[string]string{"credential": "fleet", "result": result})
	}
	return n
}

// mintsHour is a replica's count of the fleet's mints in the last hour, as
// its budget meter sees it (/status.json).
func mintsHour(t *testing.T, p *process) int64 {
	t.Helper()
	resp, err := http.Get("http://" + p.adminAddr + "/status.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var d struct {
		Rows []struct {
			Name      string `json:"name"`
			MintsHour int64  `json:"mints_hour"`
		} `json:"rows"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
		t.Fatal(err)
	}
	for _, r := range d.Rows {
		if r.Name == "fleet" {
			return r.MintsHour
		}
	}
	t.Fatal("no fleet row on the status page")
	return 0
}

// logMints logs what the replicas said about mints and the shared tier.
func logMints(t *testing.T, rs *replicaSet) {
	for i, p := range rs.procs {
		for _, l := range strings.Split(p.logText(), "\n") {
			if strings.Contains(l, "mint") || strings.Contains(l, "shared") || strings.Contains(l, "breaker") || strings.Contains(l, "fleet") {
				t.Logf("replica %d: %s", i, l)
			}
		}
	}
}

// runFailover is the fleet's failover scenario against one tier; see
// TestFleetProcessesClusterFailover. It returns numbers for the log.
func runFailover(t *testing.T, tier failoverTier) {
	// 30s first token: 1s margin, refresh_ahead 0.5, so its refresh falls
	// due 14.5s after the mint. The master is killed 1s before that, so the
	// refresh falls while it is down (a promotion takes 2s or more), and the
	// 3,000 cold Checks have 13.5s to finish before it (they took up to
	// 9.6s on the loaded 2-core machine). Later tokens live 20s (refresh
	// due 9.5s after their mint: well after the fleet converged).
	const firstLifetime, margin = 30 * time.Second, time.Second
	var mintMu sync.Mutex
	var mintedAt []time.Time
	idp := devidp.New(devidp.Options{Clients: map[string]string{fleetClient: fleetSecret}, Lifetime: firstLifetime,
		Logf: func(string, ...any) {
			mintMu.Lock()
			mintedAt = append(mintedAt, time.Now())
			mintMu.Unlock()
		}})
	idpSrv := httptest.NewServer(idp)
	defer idpSrv.Close()
	block := "  expiry_margin: 1s\n  refresh_ahead: 0.5\n" + fleetRedisBlock(t, "127.0.0.1:1") + "    lock_ttl: 2s\n"
	block = strings.Replace(block, "    addrs: [127.0.0.1:1]\n", tier.redisBlock, 1)
	rs := startFleet(t, 3, idpSrv.URL, block)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	coldStart := time.Now()
	failed, seen := rs.checks(ctx, 3000)
	coldTook := time.Since(coldStart)
	mintMu.Lock()
	var refreshDue time.Time
	if len(mintedAt) > 0 {
		refreshDue = mintedAt[0].Add((firstLifetime - margin) / 2)
	}
	mintMu.Unlock()
	// A cold phase that ran into the first token's refresh point may have
	// refreshed (a correct second mint): say that, not "2 cold mints".
	if time.Until(refreshDue) < 2*time.Second {
		t.Fatalf("the 3,000 cold Checks took %v (%d mints): too close to the first token's refresh point for the kill to come before it", coldTook, idp.Mints())
	}
	if failed != 0 || idp.Mints() != 1 {
		logMints(t, rs)
		t.Fatalf("cold: %d of 3000 Checks failed, %d mints in %v; want 0 and 1", failed, idp.Mints(), coldTook)
	}
	var first string
	for v := range seen[0] {
		first = v
	}
	idp.SetLifetime(20 * time.Second)
	tokens := tier.keys(t, "fleet-test:token:*")
	if len(tokens) != 1 {
		t.Fatalf("token keys %q, want 1", tokens)
	}
	master := tier.tokenMaster(t, tokens[0])

	// Two replicas take traffic through the outage; the third stays idle
	// from the kill until the forced refresh.
	active := &replicaSet{procs: rs.procs[:2], clients: rs.clients[:2]}
	idle := rs.procs[2]
	hitsBefore := l2Lookups(t, active, "hit")
	ld := startSteadyLoad(ctx, active)
	// The kill is placed on the IdP's wall clock, which the token's life
	// runs on (there is no clock seam across processes): 1s before the
	// first token's refresh falls due.
	if wait := time.Until(refreshDue.Add(-time.Second)); wait > 0 {
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
	}
	master.Kill()
	killedAt := time.Now()
	promotedAt := tier.waitPromoted(t)

	var resumed time.Duration
	waitFor(t, "L2 hits after the promotion", 20*time.Second, func() bool {
		if l2Lookups(t, active, "hit") > hitsBefore {
			resumed = time.Since(promotedAt)
			return true
		}
		return false
	})
	var converged string
	waitFor(t, "the active replicas back on one token", 20*time.Second, func() bool {
		converged = ld.converged()
		return converged != "" && converged != first
	})
	failed, total := ld.halt()
	if failed != 0 {
		t.Fatalf("%d of %d Checks failed through the failover", failed, total)
	}
	outageMints := idp.Mints() - 1
	if outageMints > int64(len(active.procs)) {
		logMints(t, rs)
		t.Fatalf("%d mints while the tier was away, want at most one per replica (%d)", outageMints, len(active.procs))
	}

	// Forced refresh: the fleet's token reaches its refresh point with all
	// three replicas busy, the idle one included (its first Redis call
	// since the failover). One mint for the whole fleet.
	before := idp.Mints()
	all := startSteadyLoad(ctx, rs)
	var refreshed string
	waitFor(t, "every replica on one refreshed token", 30*time.Second, func() bool {
		refreshed = all.converged()
		return refreshed != "" && refreshed != converged
	})
	failed, total2 := all.halt()
	if failed != 0 {
		t.Fatalf("%d of %d Checks failed across the refresh after the failover", failed, total2)
	}
	// The idle replica's first Redis call since the failover goes to the
	// dead master on a Cluster (its slot map predates the promotion): it
	// must re-read the map and use the fleet's token and lock, not mint.
	if got := idp.Mints() - before; got != 1 {
		logMints(t, rs)
		t.Fatalf("forced refresh after the failover: %d mints, want 1 for the fleet", got)
	}
	// Budgets stay shared: every replica counts the fleet's mints, the idle
	// one (which minted nothing itself) included, and the mints made while
	// the tier was away are replayed into it (each replica's next budget
	// call, here its status page's): one count, of every mint.
	var counts []int64
	same := func() bool {
		counts = []int64{mintsHour(t, rs.procs[0]), mintsHour(t, rs.procs[1]), mintsHour(t, idle)}
		return counts[0] == counts[1] && counts[1] == counts[2] && counts[0] == idp.Mints()
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("budget counts per replica %v; the fleet minted %d", counts, idp.Mints())
		}
	})
	waitFor(t, "one shared budget count of every mint", 30*time.Second, same)
	t.Logf("promotion seen %v after the kill; L2 hits again %v after it; %d mints while the tier was away (%d active replicas); forced refresh: 1 mint; %d Checks, 0 failed; shared budget count %d of %d mints",
		promotedAt.Sub(killedAt).Round(100*time.Millisecond), resumed.Round(100*time.Millisecond), outageMints, len(active.procs), total+total2, counts[0], idp.Mints())
}

// TestFleetProcessesClusterFailover: three tokenbroker processes on a real
// Redis Cluster (3 masters, 3 replicas). 3,000 concurrent cold Checks cost
// one mint. Then the master holding the credential's slot (token and lock
// share it) is killed with SIGKILL while Checks run and the token's refresh
// falls due: no Check fails, each replica mints at most once while the tier
// is away, L2 hits resume within seconds of the promotion, the replicas
// converge on one token, a refresh right after the failover costs exactly
// one mint for the whole fleet (a replica idle since the outage included),
// and all replicas see one shared budget count.
func TestFleetProcessesClusterFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	c := testpeer.StartCluster(t)
	runFailover(t, clusterTier(t, c))
}

// TestFleetProcessesSentinelFailover is the same scenario against a real
// Sentinel set (master, replica, three Sentinels).
func TestFleetProcessesSentinelFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	s := testpeer.StartSentinel(t)
	runFailover(t, sentinelTier(t, s))
}
