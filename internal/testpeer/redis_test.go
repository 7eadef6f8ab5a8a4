package testpeer

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"

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
