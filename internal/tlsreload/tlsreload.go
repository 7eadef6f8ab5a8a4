// Package tlsreload serves TLS with certificates that are read again when
// their files change, so rotating a certificate (cert-manager, SPIRE, a
// Kubernetes secret volume) needs no restart.
package tlsreload

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/tokenbroker/tokenbroker/config"
)

// ServerConfig returns a tls.Config for a listener described by c. Each
// handshake checks the files' modification times and sizes and re-reads
// them when they changed; a file that cannot be read or parsed keeps the
// last good certificates in use, so a half-written rotation does not take
// the listener down. With c.ClientCAFile, a client certificate signed by
// that CA is required at the handshake.
func ServerConfig(c config.ListenTLS) (*tls.Config, error) {
	if c.CertFile == "" || c.KeyFile == "" {
		return nil, errors.New("tls: cert_file and key_file are required")
	}
	r := &reloader{files: c}
	if _, err := r.load(); err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return r.current(), nil
		},
	}, nil
}

// Listen listens on addr and serves TLS per c on it: the function to wrap
// any of tokenbroker's listeners (gRPC, HTTP forward-auth, broker) with.
// For gRPC servers prefer grpc.Creds(credentials.NewTLS(ServerConfig(c))),
// which also exposes the peer's certificate to handlers.
func Listen(network, addr string, c config.ListenTLS) (net.Listener, error) {
	if _, err := ServerConfig(c); err != nil {
		return nil, err // before binding, so a bad file does not leave a port taken
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		return nil, err
	}
	tl, err := NewListener(ln, c)
	if err != nil {
		_ = ln.Close()
		return nil, err
	}
	return tl, nil
}

// NewListener serves TLS per c on an existing listener, for servers that
// create their own (an http.Server's listener, a test's).
func NewListener(ln net.Listener, c config.ListenTLS) (net.Listener, error) {
	cfg, err := ServerConfig(c)
	if err != nil {
		return nil, err
	}
	cfg.NextProtos = []string{"h2", "http/1.1"}
	return tls.NewListener(ln, cfg), nil
}

// reloader holds the tls.Config built from the files' last good content.
type reloader struct {
	files config.ListenTLS

	mu     sync.Mutex // guards the fields below
	stamps [3]stamp
	cfg    *tls.Config
}

type stamp struct {
	mod  time.Time
	size int64
}

func (r *reloader) stampsNow() ([3]stamp, error) {
	var out [3]stamp
	for i, p := range []string{r.files.CertFile, r.files.KeyFile, r.files.ClientCAFile} {
		if p == "" {
			continue
		}
		fi, err := os.Stat(p)
		if err != nil {
			return out, err
		}
		out[i] = stamp{fi.ModTime(), fi.Size()}
	}
	return out, nil
}

// current returns the config for the files as they are now, or the last
// good one when they cannot be used.
func (r *reloader) current() *tls.Config {
	st, err := r.stampsNow()
	r.mu.Lock()
	unchanged := err != nil || st == r.stamps
	cfg := r.cfg
	r.mu.Unlock()
	if unchanged {
		return cfg
	}
	if cfg, err := r.load(); err == nil {
		return cfg
	}
	return cfg
}

// load reads all files and, when they make a valid configuration, makes it current.
func (r *reloader) load() (*tls.Config, error) {
	st, err := r.stampsNow()
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	pair, err := tls.LoadX509KeyPair(r.files.CertFile, r.files.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: cert_file/key_file: %w", err)
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{pair},
		NextProtos:   []string{"h2", "http/1.1"},
	}
	if r.files.ClientCAFile != "" {
		pem, err := os.ReadFile(r.files.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("tls: client_ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls: client_ca_file %s: no PEM certificates", r.files.ClientCAFile)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	r.mu.Lock()
	r.stamps, r.cfg = st, cfg
	r.mu.Unlock()
	return cfg, nil
}
