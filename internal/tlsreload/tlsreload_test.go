package tlsreload_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/internal/tlsreload"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// ca is a certificate authority made for one test.
type ca struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

var serial int64

func newCA(t *testing.T, name string) *ca {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &ca{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns PEM certificate and key for cn, for server or client use.
func (c *ca) issue(t *testing.T, cn string, client bool) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	if client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

// write replaces a file and gives it a distinct modification time, as a
// rotation by a certificate manager would (no sleeping for mtime ticks).
func write(t *testing.T, path string, b []byte, mod time.Time) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mod, mod); err != nil {
		t.Fatal(err)
	}
}

// serve accepts connections, completes the handshake and writes "ok".
func serve(ln net.Listener, done chan<- struct{}) {
	defer close(done)
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		if err := c.(*tls.Conn).Handshake(); err == nil {
			_, _ = c.Write([]byte("ok"))
		}
		_ = c.Close()
	}
}

// dial connects and returns the server certificate's CN, or an error from
// the handshake or the first read (TLS 1.3 reports a refused client
// certificate only then).
func dial(addr string, roots *x509.CertPool, cert *tls.Certificate) (string, error) {
	cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		return "", err
	}
	if string(b) != "ok" {
		return "", io.ErrUnexpectedEOF
	}
	return c.ConnectionState().PeerCertificates[0].Subject.CommonName, nil
}

func TestListenerClientCertsAndRotation(t *testing.T) {
	dir := t.TempDir()
	serverCA, clientCA, otherCA := newCA(t, "server-ca"), newCA(t, "client-ca"), newCA(t, "other-ca")
	files := config.ListenTLS{
		CertFile:     filepath.Join(dir, "tls.crt"),
		KeyFile:      filepath.Join(dir, "tls.key"),
		ClientCAFile: filepath.Join(dir, "ca.crt"),
	}
	t0 := time.Now().Add(-time.Minute)
	c, k := serverCA.issue(t, "server-1", false)
	write(t, files.CertFile, c, t0)
	write(t, files.KeyFile, k, t0)
	write(t, files.ClientCAFile, clientCA.pem, t0)

	ln, err := tlsreload.Listen("tcp", "127.0.0.1:0", files)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go serve(ln, done)
	defer func() { _ = ln.Close(); <-done }()

	roots := x509.NewCertPool()
	roots.AddCert(serverCA.cert)
	pair := func(ca *ca, cn string) *tls.Certificate {
		c, k := ca.issue(t, cn, true)
		p, err := tls.X509KeyPair(c, k)
		if err != nil {
			t.Fatal(err)
		}
		return &p
	}
	good := pair(clientCA, "envoy")
	for _, tc := range []struct {
		name string
		cert *tls.Certificate
		ok   bool
	}{
		{"valid client certificate", good, true},
		{"no client certificate", nil, false},
		{"client certificate from another CA", pair(otherCA, "intruder"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cn, err := dial(ln.Addr().String(), roots, tc.cert)
			if tc.ok && (err != nil || cn != "server-1") {
				t.Fatalf("cn %q, err %v", cn, err)
			}
			if !tc.ok && err == nil {
				t.Fatal("handshake accepted a caller without a valid client certificate")
			}
		})
	}

	// Rotation: new server certificate and a new client CA, picked up by the
	// next handshake without restarting the listener.
	newClientCA := newCA(t, "client-ca-2")
	c, k = serverCA.issue(t, "server-2", false)
	t1 := t0.Add(30 * time.Second)
	write(t, files.CertFile, c, t1)
	write(t, files.KeyFile, k, t1)
	write(t, files.ClientCAFile, newClientCA.pem, t1)
	if _, err := dial(ln.Addr().String(), roots, good); err == nil {
		t.Fatal("a certificate of the replaced client CA is still accepted")
	}
	cn, err := dial(ln.Addr().String(), roots, pair(newClientCA, "envoy"))
	if err != nil || cn != "server-2" {
		t.Fatalf("after rotation: cn %q, err %v", cn, err)
	}

	// A broken rotation (key not matching) keeps the last good pair.
	write(t, files.KeyFile, k[:len(k)/2], t1.Add(time.Second))
	if cn, err := dial(ln.Addr().String(), roots, pair(newClientCA, "envoy")); err != nil || cn != "server-2" {
		t.Fatalf("half-written rotation: cn %q, err %v", cn, err)
	}
}

func TestServerConfigErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := tlsreload.ServerConfig(config.ListenTLS{CertFile: filepath.Join(dir, "x")}); err == nil {
		t.Fatal("no key_file accepted")
	}
	if _, err := tlsreload.ServerConfig(config.ListenTLS{CertFile: filepath.Join(dir, "x"), KeyFile: filepath.Join(dir, "y")}); err == nil {
		t.Fatal("missing files accepted")
	}
}
