package testpeer

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// SentinelMaster is the master name the test Sentinels monitor.
const SentinelMaster = "tbmaster"

// Sentinel is a Redis master, one replica and three Sentinels watching them
// (quorum 2, down-after-milliseconds 1000, failover-timeout 3000).
type Sentinel struct {
	Master, Replica *Redis
	Sentinels       []*Redis
	t               testing.TB
}

// StartSentinel starts the master, its replica and three Sentinels, each
// Sentinel with its own copy of the configuration (a Sentinel rewrites its
// file), and waits until the replica is in sync and every Sentinel knows
// the replica and the other two Sentinels, so a failover can happen.
func StartSentinel(t testing.TB) *Sentinel {
	t.Helper()
	s := &Sentinel{t: t}
	s.Master = StartRedis(t)
	s.Replica = newRedis(t, "Ready to accept connections")
	host, port := splitAddr(t, s.Master.Addr)
	s.Replica.args = append(s.Replica.args, "--replicaof", host, port)
	s.Replica.launch()
	for range 3 {
		r := newRedis(t, "+monitor master")
		conf := filepath.Join(r.dir, "sentinel.conf")
		body := fmt.Sprintf("sentinel resolve-hostnames no\nsentinel monitor %[1]s %[2]s %[3]s 2\n"+
			"sentinel down-after-milliseconds %[1]s 1000\nsentinel failover-timeout %[1]s 3000\nsentinel parallel-syncs %[1]s 1\n",
			SentinelMaster, host, port)
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		r.head, r.tail = []string{conf}, []string{"--sentinel"}
		r.launch()
		s.Sentinels = append(s.Sentinels, r)
	}
	if err := waitUntil(30*time.Second, s.ready); err != nil {
		t.Fatalf("sentinel set not ready: %v", err)
	}
	return s
}

func splitAddr(t testing.TB, addr string) (host, port string) {
	i := strings.LastIndexByte(addr, ':')
	if i < 0 {
		t.Fatalf("bad address %q", addr)
	}
	return addr[:i], addr[i+1:]
}

// Addrs are the Sentinels' addresses.
func (s *Sentinel) Addrs() []string {
	var out []string
	for _, r := range s.Sentinels {
		out = append(out, r.Addr)
	}
	return out
}

func (s *Sentinel) ready() error {
	ctx := context.Background()
	repl, err := s.Replica.Client().Info(ctx, "replication").Result()
	if err != nil || !strings.Contains(repl, "master_link_status:up") {
		return fmt.Errorf("replica not in sync: %v", err)
	}
	for _, r := range s.Sentinels {
		replicas, err := r.Client().Do(ctx, "SENTINEL", "REPLICAS", SentinelMaster).Slice()
		if err != nil || len(replicas) != 1 {
			return fmt.Errorf("sentinel %s: replicas %v %v", r.Addr, replicas, err)
		}
		others, err := r.Client().Do(ctx, "SENTINEL", "SENTINELS", SentinelMaster).Slice()
		if err != nil || len(others) != len(s.Sentinels)-1 {
			return fmt.Errorf("sentinel %s: knows %d other sentinels (%v)", r.Addr, len(others), err)
		}
	}
	return nil
}

// MasterAddr is the master's address according to a live Sentinel.
func (s *Sentinel) MasterAddr() string {
	s.t.Helper()
	addr, err := s.masterAddr()
	if err != nil {
		s.t.Fatal(err)
	}
	return addr
}

func (s *Sentinel) masterAddr() (string, error) {
	for _, r := range s.Sentinels {
		if !r.Alive() {
			continue
		}
		hp, err := r.Client().Do(context.Background(), "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SentinelMaster).StringSlice()
		if err == nil && len(hp) == 2 {
			return hp[0] + ":" + hp[1], nil
		}
	}
	return "", fmt.Errorf("no sentinel names a master")
}

// WaitPromoted waits (up to limit) until every live Sentinel names the
// replica as master and the replica says it is one; it returns when that
// was first observed.
func (s *Sentinel) WaitPromoted(limit time.Duration) time.Time {
	s.t.Helper()
	err := waitUntil(limit, func() error {
		for _, r := range s.Sentinels {
			hp, err := r.Client().Do(context.Background(), "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SentinelMaster).StringSlice()
			if err != nil || len(hp) != 2 || hp[0]+":"+hp[1] != s.Replica.Addr {
				return fmt.Errorf("sentinel %s names %v (%v)", r.Addr, hp, err)
			}
		}
		repl, err := s.Replica.Client().Info(context.Background(), "replication").Result()
		if err != nil || !strings.Contains(repl, "role:master") {
			return fmt.Errorf("replica not master yet: %v", err)
		}
		return nil
	})
	if err != nil {
		s.t.Fatalf("no promotion within %v: %v", limit, err)
	}
	return time.Now()
}
