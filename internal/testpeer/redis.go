// Package testpeer starts real peer processes (redis-server) for tests, on
// loopback and random ports, and stops them when the test ends.
package testpeer

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Redis is a redis-server started for one test, with no persistence.
type Redis struct {
	Addr string // 127.0.0.1:port

	t    testing.TB
	bin  string
	dir  string
	port int
	cmd  *exec.Cmd
	done chan struct{}
}

// NeedBinary returns the path of name, skipping the test when it is missing,
// or failing it when CI=true (CI must run every test).
func NeedBinary(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s not found (CI=true: install it with .ci/install-deps): %v", name, err)
	}
	t.Skipf("%s not installed: %v", name, err)
	return ""
}

// StartRedis starts redis-server on a free loopback port in a temporary
// directory; it is killed when the test ends.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	r := &Redis{t: t, bin: NeedBinary(t, "redis-server"), dir: t.TempDir()}
	var err error
	for range 5 { // a port freed by freePort can be taken by someone else
		if r.port, err = freePort(); err != nil {
			t.Fatal(err)
		}
		if err = r.start(); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Kill)
	return r
}

func (r *Redis) start() error {
	r.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port))
	cmd := exec.Command(r.bin,
		"--bind", "127.0.0.1", "--port", strconv.Itoa(r.port),
		"--save", "", "--appendonly", "no", "--daemonize", "no",
		"--dir", r.dir, "--protected-mode", "yes", "--loglevel", "notice")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("redis-server: %w", err)
	}
	r.cmd, r.done = cmd, make(chan struct{})
	ready := make(chan struct{})
	var log strings.Builder
	go func() {
		sc := bufio.NewScanner(out)
		signalled := false
		for sc.Scan() {
			if !signalled {
				log.WriteString(sc.Text() + "\n")
				if strings.Contains(sc.Text(), "Ready to accept connections") {
					signalled = true
					close(ready)
				}
			}
		}
		if !signalled {
			close(ready)
		}
		_ = cmd.Wait()
		close(r.done)
	}()
	timeout := time.NewTimer(20 * time.Second)
	defer timeout.Stop()
	select {
	case <-ready:
	case <-timeout.C:
		_ = cmd.Process.Kill()
		<-r.done
		return errors.New("redis-server did not become ready in 20s")
	}
	select {
	case <-r.done:
		return fmt.Errorf("redis-server exited:\n%s", log.String())
	default:
	}
	return r.ping()
}

func (r *Redis) ping() error {
	c, err := net.DialTimeout("tcp", r.Addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("redis PING: %q %v", line, err)
	}
	return nil
}

// Kill stops the server at once (SIGKILL), as a crash would. Safe to repeat.
func (r *Redis) Kill() {
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Signal(syscall.SIGCONT) // in case it was paused
	_ = r.cmd.Process.Kill()
	<-r.done
	r.cmd = nil
}

// Restart starts a killed server again on the same address (empty: no persistence).
func (r *Redis) Restart() {
	r.t.Helper()
	r.Kill()
	var err error
	for range 50 { // the old socket may take a moment to be released
		if err = r.start(); err == nil {
			return
		}
	}
	r.t.Fatalf("restart redis-server: %v", err)
}

// Pause stops the process (SIGSTOP): connections stay open but nothing is
// answered, like a Redis stuck in a long command. Resume undoes it.
func (r *Redis) Pause() {
	if err := r.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		r.t.Fatal(err)
	}
}

// Resume continues a paused server.
func (r *Redis) Resume() {
	if err := r.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		r.t.Fatal(err)
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
