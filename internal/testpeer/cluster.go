package testpeer

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// clusterNodeTimeout is the cluster-node-timeout of test clusters: a killed
// master's replica is promoted about this long after the kill (plus an
// election), so failover tests take seconds, not the default 15 s.
const clusterNodeTimeout = 1500 * time.Millisecond

// Cluster is a Redis Cluster of 3 masters with one replica each, every node
// a redis-server in cluster mode with its own directory.
type Cluster struct {
	Nodes []*Redis
	t     testing.TB
}

// StartCluster starts six nodes, joins them with redis-cli --cluster create
// (--cluster-replicas 1), and waits until every node reports cluster_state:ok,
// knows all six, and every replica is in sync with its master (so a
// failover can promote it). Killed when the test ends.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	cli := NeedBinary(t, "redis-cli")
	c := &Cluster{t: t}
	for range 6 {
		bus, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		r := newRedis(t, "Ready to accept connections")
		// The bus port is given explicitly: port+10000 may be taken or out of range.
		r.args = append(r.args, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", strconv.Itoa(int(clusterNodeTimeout.Milliseconds())),
			"--cluster-port", strconv.Itoa(bus))
		r.launch()
		c.Nodes = append(c.Nodes, r)
	}
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	if err := waitUntil(30*time.Second, c.healthy); err != nil {
		t.Fatalf("cluster not ready: %v", err)
	}
	return c
}

// Addrs are the nodes' addresses, the killed ones included.
func (c *Cluster) Addrs() []string {
	var out []string
	for _, n := range c.Nodes {
		out = append(out, n.Addr)
	}
	return out
}

// healthy: every live node says cluster_state:ok and knows every node that
// is alive, every slot is served by a live master, and each replica is in
// sync with its master.
func (c *Cluster) healthy() error {
	ctx := context.Background()
	live := 0
	for _, n := range c.Nodes {
		if n.Alive() {
			live++
		}
	}
	for _, n := range c.Nodes {
		if !n.Alive() {
			continue
		}
		cl := n.Client()
		info, err := cl.ClusterInfo(ctx).Result()
		if err != nil {
			return fmt.Errorf("%s: cluster info: %w", n.Addr, err)
		}
		if !strings.Contains(info, "cluster_state:ok") {
			return fmt.Errorf("%s: cluster_state not ok", n.Addr)
		}
		nodes, err := cl.ClusterNodes(ctx).Result()
		if err != nil {
			return fmt.Errorf("%s: cluster nodes: %w", n.Addr, err)
		}
		healthy := 0
		for _, line := range strings.Split(strings.TrimSpace(nodes), "\n") {
			f := strings.Fields(line)
			if len(f) >= 8 && !strings.Contains(f[2], "fail") && f[7] == "connected" {
				healthy++
			}
		}
		if healthy != live {
			return fmt.Errorf("%s: %d nodes seen healthy, %d alive", n.Addr, healthy, live)
		}
		repl, err := cl.Info(ctx, "replication").Result()
		if err != nil {
			return fmt.Errorf("%s: info: %w", n.Addr, err)
		}
		if strings.Contains(repl, "role:slave") && !strings.Contains(repl, "master_link_status:up") {
			return fmt.Errorf("%s: replica not in sync", n.Addr)
		}
	}
	for _, n := range c.Nodes {
		if !n.Alive() {
			continue
		}
		slots, err := n.Client().ClusterSlots(ctx).Result()
		if err != nil {
			return err
		}
		covered := 0
		for _, s := range slots {
			if m := c.node(s.Nodes[0].Addr); m == nil || !m.Alive() {
				return fmt.Errorf("slots %d-%d served by a dead master %s", s.Start, s.End, s.Nodes[0].Addr)
			}
			covered += s.End - s.Start + 1
		}
		if covered != 16384 {
			return fmt.Errorf("%d of 16384 slots covered", covered)
		}
		break
	}
	return nil
}

func (c *Cluster) node(addr string) *Redis {
	for _, n := range c.Nodes {
		if n.Addr == addr {
			return n
		}
	}
	return nil
}

func (c *Cluster) anyLive() *Redis {
	for _, n := range c.Nodes {
		if n.Alive() {
			return n
		}
	}
	c.t.Fatal("no live cluster node")
	return nil
}

// Slot is the hash slot of key.
func (c *Cluster) Slot(key string) int {
	c.t.Helper()
	s, err := c.anyLive().Client().ClusterKeySlot(context.Background(), key).Result()
	if err != nil {
		c.t.Fatal(err)
	}
	return int(s)
}

// MasterOf is the node serving slot now.
func (c *Cluster) MasterOf(slot int) *Redis {
	c.t.Helper()
	slots, err := c.anyLive().Client().ClusterSlots(context.Background()).Result()
	if err != nil {
		c.t.Fatal(err)
	}
	for _, s := range slots {
		if s.Start <= slot && slot <= s.End {
			return c.node(s.Nodes[0].Addr)
		}
	}
	c.t.Fatalf("slot %d not served", slot)
	return nil
}

// NodeID is the cluster node id of n.
func (c *Cluster) NodeID(n *Redis) string {
	c.t.Helper()
	id, err := n.Client().Do(context.Background(), "CLUSTER", "MYID").Text()
	if err != nil {
		c.t.Fatal(err)
	}
	return id
}

// WaitHealthy waits (up to limit) until the cluster is healthy again after
// a kill: the dead master's replica promoted and seen by every live node.
// It returns when that was first observed.
func (c *Cluster) WaitHealthy(limit time.Duration) time.Time {
	c.t.Helper()
	if err := waitUntil(limit, c.healthy); err != nil {
		c.t.Fatalf("cluster not healthy within %v: %v", limit, err)
	}
	return time.Now()
}

// Reshard moves n slots from one master to another with redis-cli --cluster
// reshard, which migrates the keys one by one (clients see MOVED and ASK
// meanwhile). It returns when the move is done.
func (c *Cluster) Reshard(from, to *Redis, n int) {
	c.t.Helper()
	out, err := exec.Command(NeedBinary(c.t, "redis-cli"), "--cluster", "reshard", from.Addr,
		"--cluster-from", c.NodeID(from), "--cluster-to", c.NodeID(to),
		"--cluster-slots", strconv.Itoa(n), "--cluster-yes", "--cluster-pipeline", "1").CombinedOutput()
	if err != nil {
		c.t.Fatalf("redis-cli --cluster reshard: %v\n%s", err, out)
	}
}

// Migration moves one slot between masters by hand, the way redis-cli
// --cluster reshard does, one step at a time so a test can act in between:
// after Begin the slot is MIGRATING/IMPORTING, after MoveKeys its keys live
// on the target while the source still owns the slot (clients get ASK),
// after Finish the target owns it (clients with the old map get MOVED).
type Migration struct {
	c            *Cluster
	slot         int
	from, to     *Redis
	fromID, toID string
}

// BeginMigration marks slot as migrating from its master to to.
func (c *Cluster) BeginMigration(slot int, to *Redis) *Migration {
	c.t.Helper()
	m := &Migration{c: c, slot: slot, from: c.MasterOf(slot), to: to}
	m.fromID, m.toID = c.NodeID(m.from), c.NodeID(to)
	ctx := context.Background()
	if err := to.Client().Do(ctx, "CLUSTER", "SETSLOT", slot, "IMPORTING", m.fromID).Err(); err != nil {
		c.t.Fatal(err)
	}
	if err := m.from.Client().Do(ctx, "CLUSTER", "SETSLOT", slot, "MIGRATING", m.toID).Err(); err != nil {
		c.t.Fatal(err)
	}
	return m
}

// MoveKeys migrates every key of the slot to the target (MIGRATE).
func (m *Migration) MoveKeys() int {
	m.c.t.Helper()
	ctx := context.Background()
	keys, err := m.from.Client().ClusterGetKeysInSlot(ctx, m.slot, 1000).Result()
	if err != nil {
		m.c.t.Fatal(err)
	}
	host, port := splitAddr(m.c.t, m.to.Addr)
	for _, k := range keys {
		if err := m.from.Client().Migrate(ctx, host, port, k, 0, 5*time.Second).Err(); err != nil {
			m.c.t.Fatalf("MIGRATE %s: %v", k, err)
		}
	}
	return len(keys)
}

// Finish gives the slot to the target on every live master.
func (m *Migration) Finish() {
	m.c.t.Helper()
	ctx := context.Background()
	for _, n := range []*Redis{m.to, m.from} {
		if err := n.Client().Do(ctx, "CLUSTER", "SETSLOT", m.slot, "NODE", m.toID).Err(); err != nil {
			m.c.t.Fatal(err)
		}
	}
	for _, n := range m.c.Nodes {
		if n.Alive() && n != m.to && n != m.from && strings.Contains(n.Client().Info(ctx, "replication").Val(), "role:master") {
			_ = n.Client().Do(ctx, "CLUSTER", "SETSLOT", m.slot, "NODE", m.toID).Err()
		}
	}
}

// Masters are the live masters.
func (c *Cluster) Masters() []*Redis {
	var out []*Redis
	for _, n := range c.Nodes {
		if n.Alive() && strings.Contains(n.Client().Info(context.Background(), "replication").Val(), "role:master") {
			out = append(out, n)
		}
	}
	return out
}
