package testpeer

import (
	"bufio"
	"context"
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func ping(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return "", err
	}
	return bufio.NewReader(c).ReadString('\n')
}

func TestRedisLifecycle(t *testing.T) {
	r := StartRedis(t)
	if !strings.HasPrefix(r.Addr, "127.0.0.1:") {
		t.Fatalf("addr %s not on loopback", r.Addr)
	}
	if line, err := ping(r.Addr); err != nil || line != "+PONG\r\n" {
		t.Fatalf("ping: %q %v", line, err)
	}
	r.Pause()
	if _, err := ping(r.Addr); err == nil {
		t.Fatal("paused server answered")
	}
	r.Resume()
	r.Kill()
	if _, err := ping(r.Addr); err == nil {
		t.Fatal("killed server answered")
	}
	addr := r.Addr
	r.Restart()
	if line, err := ping(r.Addr); err != nil || line != "+PONG\r\n" || r.Addr != addr {
		t.Fatalf("after restart on %s (was %s): %q %v", r.Addr, addr, line, err)
	}
}

// TestRedisTLSAndACL: a TLS-only server answers a client that trusts the
// test's CA and logs in as the ACL user, and refuses plain TCP, the default
// user and a wrong password.
func TestRedisTLSAndACL(t *testing.T) {
	r := StartRedis(t, WithTLS(), WithACL("fleet", "acl-pass-93"))
	ctx := context.Background()
	if err := r.Client().Set(ctx, "k", "v", time.Minute).Err(); err != nil {
		t.Fatalf("TLS + ACL user: %v", err)
	}
	if line, err := ping(r.Addr); err == nil && strings.HasPrefix(line, "+PONG") {
		t.Fatal("plain TCP answered on the TLS port")
	}
	for _, tc := range []struct{ user, pass string }{{"", ""}, {"fleet", "wrong"}} {
		c := redis.NewClient(&redis.Options{Addr: r.Addr, TLSConfig: r.TLS, Username: tc.user, Password: tc.pass, DisableIdentity: true, MaxRetries: -1})
		err := c.Get(ctx, "k").Err()
		c.Close()
		if err == nil {
			t.Fatalf("user %q password %q was let in", tc.user, tc.pass)
		}
	}
	c := redis.NewClient(&redis.Options{Addr: r.Addr, TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12}, Username: r.Username, Password: r.Password, DisableIdentity: true, MaxRetries: -1})
	defer c.Close()
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatal("a client that does not trust the test CA connected")
	}
}

// TestClusterFailover: six nodes form a cluster; killing the master of a
// slot promotes its replica, and a reshard moves slots.
func TestClusterFailover(t *testing.T) {
	NeedBinary(t, "redis-cli")
	c := StartCluster(t)
	if len(c.Nodes) != 6 {
		t.Fatalf("%d nodes", len(c.Nodes))
	}
	slot := c.Slot("{probe}x")
	m := c.MasterOf(slot)
	m.Kill()
	start := time.Now()
	c.WaitHealthy(20 * time.Second)
	if n := c.MasterOf(slot); n == m || !n.Alive() {
		t.Fatalf("slot %d still on %s after failover", slot, m.Addr)
	}
	t.Logf("promotion seen %v after the kill", time.Since(start).Round(time.Millisecond))
	from := c.MasterOf(slot)
	var to *Redis
	for _, n := range c.Nodes {
		if n.Alive() && n != from && strings.Contains(n.Client().Info(context.Background(), "replication").Val(), "role:master") {
			to = n
			break
		}
	}
	c.Reshard(from, to, 10)
	c.WaitHealthy(20 * time.Second)
}

// TestSentinelFailover: killing the master makes the Sentinels promote the replica.
func TestSentinelFailover(t *testing.T) {
	s := StartSentinel(t)
	if got := s.MasterAddr(); got != s.Master.Addr {
		t.Fatalf("sentinels name %s, want %s", got, s.Master.Addr)
	}
	s.Master.Kill()
	start := time.Now()
	s.WaitPromoted(20 * time.Second)
	t.Logf("promotion seen %v after the kill", time.Since(start).Round(time.Millisecond))
}
