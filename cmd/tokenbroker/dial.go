package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tokenbroker/tokenbroker/config"
)

// dialFlags say how `check` and `health` reach a running tokenbroker's gRPC
// listener: its address, and TLS when the listener serves listen.tls.
type dialFlags struct {
	config                    string
	grpc                      string
	ca, cert, key, serverName string
	fs                        *flag.FlagSet
	cfg                       *config.Config // loaded from --config; nil without it
}

func (d *dialFlags) register(fs *flag.FlagSet) {
	d.fs = fs
	fs.StringVar(&d.config, "config", "", "the running tokenbroker's configuration `FILE`: its listen.grpc and listen.tls say where and how to connect")
	fs.StringVar(&d.grpc, "grpc", "127.0.0.1:9191", "`ADDR` of the gRPC listener (with --config: its listen.grpc)")
	fs.StringVar(&d.ca, "tls-ca", "", "PEM CA bundle `FILE` that verifies the server's certificate (with --config and no --tls-ca: trust exactly listen.tls.cert_file)")
	fs.StringVar(&d.cert, "tls-cert", "", "PEM client certificate `FILE`, for a listener with listen.tls.client_ca_file")
	fs.StringVar(&d.key, "tls-key", "", "PEM key `FILE` of --tls-cert")
	fs.StringVar(&d.serverName, "tls-server-name", "", "`NAME` to verify in the server's certificate (default: the address's host)")
}

// set reports whether the flag was given on the command line.
func (d *dialFlags) set(name string) bool {
	found := false
	d.fs.Visit(func(f *flag.Flag) { found = found || f.Name == name })
	return found
}

// load reads --config, when given. Problems are FILE:LINE: field: problem.
func (d *dialFlags) load() error {
	if d.config == "" {
		return nil
	}
	cfg, err := config.Load(d.config)
	if err != nil {
		return err
	}
	d.cfg = cfg
	return nil
}

// address is --grpc, or listen.grpc of --config with a wildcard host
// replaced by loopback ("" when that listener is off).
func (d *dialFlags) address() string {
	if d.cfg == nil || d.set("grpc") {
		return d.grpc
	}
	return localAddr(d.cfg.Listen.GRPC)
}

// localAddr turns a listen address into one this host can dial: 0.0.0.0,
// [::] and an empty host mean every interface, so loopback serves.
func localAddr(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return net.JoinHostPort(host, port)
}

// listenTLS is listen.tls of --config (off without it).
func (d *dialFlags) listenTLS() config.ListenTLS {
	if d.cfg == nil {
		return config.ListenTLS{}
	}
	return d.cfg.Listen.TLS
}

// tlsConfig is the client side of listen: nil for plaintext. TLS is on when
// any --tls-* flag is given or listen is enabled.
func (d *dialFlags) tlsConfig(addr string, listen config.ListenTLS) (*tls.Config, error) {
	if d.ca == "" && d.cert == "" && d.key == "" && d.serverName == "" && !listen.Enabled() {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: d.serverName}
	if tc.ServerName == "" {
		if host, _, err := net.SplitHostPort(addr); err == nil {
			tc.ServerName = host
		}
	}
	if (d.cert == "") != (d.key == "") {
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	if d.cert != "" {
		pair, err := tls.LoadX509KeyPair(d.cert, d.key)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		tc.Certificates = []tls.Certificate{pair}
	} else if listen.ClientCAFile != "" {
		return nil, errors.New("listen.tls.client_ca_file makes the listener require a client certificate: pass --tls-cert and --tls-key " +
			"(one its CA signed), or ask the admin listener, which is plain HTTP: --http http://127.0.0.1:9193/readyz")
	}
	switch {
	case d.ca != "":
		pem, err := os.ReadFile(d.ca)
		if err != nil {
			return nil, fmt.Errorf("--tls-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--tls-ca %s: no PEM certificate", d.ca)
		}
		tc.RootCAs = pool
	case listen.Enabled():
		// The probe runs beside the server and reads the same file: it
		// trusts exactly the certificate the server is configured to
		// present, whatever CA signed it and whatever names it carries
		// (a Service name, rarely 127.0.0.1).
		leaf, err := firstCertificate(listen.CertFile)
		if err != nil {
			return nil, fmt.Errorf("listen.tls.cert_file: %w", err)
		}
		tc.InsecureSkipVerify = true // replaced by the exact comparison below
		tc.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 || !bytes.Equal(cs.PeerCertificates[0].Raw, leaf) {
				return errors.New("the server does not present listen.tls.cert_file's certificate (pass --tls-ca to verify by CA)")
			}
			return nil
		}
	}
	return tc, nil
}

// firstCertificate returns the DER of the first certificate in a PEM file.
func firstCertificate(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, fmt.Errorf("%s: no PEM certificate", path)
		}
		if blk.Type == "CERTIFICATE" {
			return blk.Bytes, nil
		}
	}
}

// dial connects to the gRPC listener (lazily: errors show on the first call).
func (d *dialFlags) dial() (*grpc.ClientConn, string, error) {
	addr := d.address()
	if addr == "" {
		return nil, "", errors.New("listen.grpc is off in " + d.config)
	}
	tc, err := d.tlsConfig(addr, d.listenTLS())
	if err != nil {
		return nil, addr, err
	}
	creds := insecure.NewCredentials()
	if tc != nil {
		creds = credentials.NewTLS(tc)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	return conn, addr, err
}
