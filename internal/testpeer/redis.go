// Package testpeer starts real peer processes (redis-server: single nodes,
// a Redis Cluster, a Sentinel set) for tests, on loopback and random ports,
// and stops them when the test ends.
package testpeer

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenbroker/tokenbroker/internal/testcerts"
)

// Redis is a redis-server started for one test, with no persistence.
type Redis struct {
	Addr string // 127.0.0.1:port

	// With WithTLS: CAFile is the CA's certificate (PEM) and TLS a client
	// configuration trusting it. With WithACL: the user and its password.
	CAFile             string
	TLS                *tls.Config
	Username, Password string

	t     testing.TB
	bin   string
	dir   string
	port  int
	head  []string // arguments before the rest (a configuration file)
	args  []string // arguments from options, cluster mode, replicaof
	tail  []string // arguments after the rest (--sentinel)
	ready string   // the log line that says it serves
	cmd   *exec.Cmd
	done  chan struct{}

	clientOnce sync.Once
	client     *redis.Client
}

// RedisOption configures StartRedis.
type RedisOption func(*Redis)

// WithTLS serves TLS only (--tls-port, --port 0) with a certificate from a
// CA the test makes; clients need not present certificates.
func WithTLS() RedisOption {
	return func(r *Redis) {
		ca := testcerts.NewCA(r.t, "testpeer redis CA")
		certFile, keyFile := ca.IssueFiles(r.t, r.dir, "redis", "127.0.0.1", false)
		r.CAFile = filepath.Join(r.dir, "ca.crt")
		testcerts.Write(r.t, r.CAFile, ca.PEM(), time.Now())
		r.TLS = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: ca.Pool(), ServerName: "127.0.0.1"}
		r.args = append(r.args, "--tls-cert-file", certFile, "--tls-key-file", keyFile,
			"--tls-ca-cert-file", r.CAFile, "--tls-auth-clients", "no")
	}
}

// WithACL turns the default user off and adds user with password and every
// permission: a client must authenticate as user.
func WithACL(user, password string) RedisOption {
	return func(r *Redis) {
		r.Username, r.Password = user, password
		r.args = append(r.args, "--user", "default", "off", "--user", user, "on", ">"+password, "~*", "&*", "+@all")
	}
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
func StartRedis(t testing.TB, opts ...RedisOption) *Redis {
	t.Helper()
	r := newRedis(t, "Ready to accept connections")
	for _, o := range opts {
		o(r)
	}
	r.launch()
	return r
}

func newRedis(t testing.TB, ready string) *Redis {
	t.Helper()
	return &Redis{t: t, bin: NeedBinary(t, "redis-server"), dir: t.TempDir(), ready: ready}
}

// launch starts r on a free port, retrying when the port was taken meanwhile.
func (r *Redis) launch() {
	r.t.Helper()
	var err error
	for range 5 { // a port freed by freePort can be taken by someone else
		if r.port, err = freePort(); err != nil {
			r.t.Fatal(err)
		}
		if err = r.start(); err == nil {
			break
		}
	}
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(r.Kill)
}

func (r *Redis) start() error {
	r.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port))
	args := append([]string(nil), r.head...)
	portFlag := "--port"
	if r.TLS != nil {
		portFlag = "--tls-port"
		args = append(args, "--port", "0")
	}
	args = append(args, "--bind", "127.0.0.1", portFlag, strconv.Itoa(r.port),
		"--save", "", "--appendonly", "no", "--daemonize", "no",
		"--dir", r.dir, "--protected-mode", "yes", "--loglevel", "notice")
	args = append(args, r.args...)
	args = append(args, r.tail...)
	cmd := exec.Command(r.bin, args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("redis-server: %w", err)
	}
	done := make(chan struct{})
	r.cmd, r.done = cmd, done
	ready := make(chan struct{})
	var log strings.Builder
	go func() {
		sc := bufio.NewScanner(out)
		signalled := false
		for sc.Scan() {
			if !signalled {
				log.WriteString(sc.Text() + "\n")
				if strings.Contains(sc.Text(), r.ready) {
					signalled = true
					close(ready)
				}
			}
		}
		if !signalled {
			close(ready)
		}
		_ = cmd.Wait()
		close(done)
	}()
	timeout := time.NewTimer(20 * time.Second)
	defer timeout.Stop()
	select {
	case <-ready:
	case <-timeout.C:
		_ = cmd.Process.Kill()
		<-done
		return errors.New("redis-server did not become ready in 20s")
	}
	select {
	case <-done:
		return fmt.Errorf("redis-server exited:\n%s", log.String())
	default:
	}
	if err := r.ping(); err != nil {
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("%w\n%s", err, log.String())
	}
	return nil
}

// Client is a go-redis client for this one server (TLS and ACL as set up),
// made once and closed when the test ends. It does not follow the cluster.
func (r *Redis) Client() *redis.Client {
	r.clientOnce.Do(func() {
		r.client = redis.NewClient(&redis.Options{Addr: r.Addr, TLSConfig: r.TLS, Username: r.Username, Password: r.Password,
			DisableIdentity: true, DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second, MaxRetries: -1})
		r.t.Cleanup(func() { _ = r.client.Close() })
	})
	return r.client
}

func (r *Redis) ping() error {
	c := redis.NewClient(&redis.Options{Addr: r.Addr, TLSConfig: r.TLS, Username: r.Username, Password: r.Password,
		DisableIdentity: true, DialTimeout: 5 * time.Second, ReadTimeout: 5 * time.Second, MaxRetries: -1})
	defer c.Close()
	if err := c.Ping(context.Background()).Err(); err != nil {
		return fmt.Errorf("redis PING: %w", err)
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

// Alive reports whether the server has been started and not killed.
func (r *Redis) Alive() bool { return r.cmd != nil }

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

// waitUntil polls cond every 50ms until it holds or limit passes; the
// interval paces the polling of a real peer's state, it synchronises nothing.
func waitUntil(limit time.Duration, cond func() error) error {
	deadline := time.Now().Add(limit)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		<-tick.C
	}
}
