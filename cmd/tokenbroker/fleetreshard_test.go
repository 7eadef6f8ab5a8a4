package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/devidp"
	"github.com/tokenbroker/tokenbroker/internal/testpeer"
)

// missLoad is Checks on every replica with one replica's own copy of the
// token dropped (POST /admin/credentials/fleet/invalidate?local=true)
// before each round, so every round also asks Redis for the fleet's token.
type missLoad struct {
	stop, done chan struct{}

	mu            sync.Mutex // guards the fields below
	failed, total int
	rounds        int
}

func startMissLoad(ctx context.Context, t *testing.T, rs *replicaSet) *missLoad {
	l := &missLoad{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		tick := time.NewTicker(20 * time.Millisecond) // load pacing
		defer tick.Stop()
		for i := 0; ; i++ {
			p := rs.procs[i%len(rs.procs)]
			if resp, err := http.Post("http://"+p.adminAddr+"/admin/credentials/fleet/invalidate?local=true", "", nil); err == nil {
				resp.Body.Close()
			}
			failed, _ := rs.checks(ctx, 30)
			l.mu.Lock()
			l.failed, l.total, l.rounds = l.failed+failed, l.total+30, l.rounds+1
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

// waitRounds returns once n more rounds have run.
func (l *missLoad) waitRounds(t *testing.T, n int) {
	t.Helper()
	l.mu.Lock()
	target := l.rounds + n
	l.mu.Unlock()
	waitFor(t, "load rounds", 30*time.Second, func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.rounds >= target
	})
}

func (l *missLoad) halt() (failed, total int) {
	close(l.stop)
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.failed, l.total
}

// TestFleetProcessesClusterReshard: while three processes answer Checks
// whose L1 misses go to Redis, the credential's slot moves to another
// master, first by hand one step at a time (clients get ASK while its key
// has moved and the slot has not, then MOVED), then back with redis-cli
// --cluster reshard. No Check fails, every miss is answered from Redis
// (no L2 error, no second mint).
func TestFleetProcessesClusterReshard(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	c := testpeer.StartCluster(t)
	tier := clusterTier(t, c)
	idp := devidp.New(devidp.Options{Clients: map[string]string{fleetClient: fleetSecret}, Lifetime: time.Hour})
	idpSrv := httptest.NewServer(idp)
	defer idpSrv.Close()
	block := "  expiry_margin: 1s\n" + fleetRedisBlock(t, "127.0.0.1:1")
	block = strings.Replace(block, "    addrs: [127.0.0.1:1]\n", tier.redisBlock, 1)
	rs := startFleet(t, 3, idpSrv.URL, block)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if failed, _ := rs.checks(ctx, 300); failed != 0 || idp.Mints() != 1 {
		t.Fatalf("warm-up: %d failed, %d mints", failed, idp.Mints())
	}
	tokens := tier.keys(t, "fleet-test:token:*")
	if len(tokens) != 1 {
		t.Fatalf("token keys %q, want 1", tokens)
	}
	slot := c.Slot(tokens[0])
	source := c.MasterOf(slot)
	var target *testpeer.Redis
	for _, m := range c.Masters() {
		if m != source {
			target = m
			break
		}
	}
	hits0, errs0 := l2Lookups(t, rs, "hit"), l2Lookups(t, rs, "error")

	ld := startMissLoad(ctx, t, rs)
	mig := c.BeginMigration(slot, target)
	ld.waitRounds(t, 5)
	if n := mig.MoveKeys(); n == 0 {
		t.Fatal("no key moved")
	}
	ld.waitRounds(t, 10) // ASK: the token is on the target, the slot still the source's
	mig.Finish()
	ld.waitRounds(t, 10) // MOVED for every replica's old slot map
	// Back with redis-cli: the target's slots up to ours (redis-cli takes a
	// source's slots in ascending order).
	c.Reshard(target, source, 1+countSlotsBelow(t, c, target, slot))
	if c.MasterOf(slot) != source {
		t.Fatalf("redis-cli reshard did not move slot %d back", slot)
	}
	ld.waitRounds(t, 10)
	failed, total := ld.halt()
	hits, errs := l2Lookups(t, rs, "hit")-hits0, l2Lookups(t, rs, "error")-errs0
	if failed != 0 {
		t.Fatalf("%d of %d Checks failed during the resharding", failed, total)
	}
	if errs != 0 || idp.Mints() != 1 {
		t.Fatalf("resharding: %v L2 errors, %d mints; want 0 and 1 (every miss answered from Redis)", errs, idp.Mints())
	}
	if hits < 30 {
		t.Fatalf("only %v L2 hits: the load did not go through Redis", hits)
	}
	t.Logf("slot %d moved by hand (ASK, MOVED) and back with redis-cli: %d Checks, 0 failed, %v L2 hits, 0 errors, 1 mint", slot, total, hits)
}

// countSlotsBelow counts the slots n serves below slot.
func countSlotsBelow(t *testing.T, c *testpeer.Cluster, n *testpeer.Redis, slot int) int {
	t.Helper()
	slots, err := n.Client().ClusterSlots(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	count := 0
	for _, s := range slots {
		if s.Nodes[0].Addr != n.Addr {
			continue
		}
		for x := s.Start; x <= s.End; x++ {
			if x < slot {
				count++
			}
		}
	}
	return count
}
