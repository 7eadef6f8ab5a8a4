package credential

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"sync"
	"time"
)

// clientCert is a client certificate and key pair re-read when either file
// changes, for tls_client_auth (RFC 8705 §2).
type clientCert struct {
	certFile, keyFile string
	onRotate          func() // called after a new pair is loaded (closes idle connections)

	mu        sync.Mutex // guards the fields below
	certStamp fileStamp
	keyStamp  fileStamp
	cert      *tls.Certificate
}

// get returns the current pair, loading it again when a file changed. It is
// called at each TLS handshake with the token endpoint, i.e. rarely.
func (c *clientCert) get() (*tls.Certificate, error) {
	cs, err := stampOf(c.certFile)
	if err != nil {
		return nil, fmt.Errorf("client_cert_file: %w", err)
	}
	ks, err := stampOf(c.keyFile)
	if err != nil {
		return nil, fmt.Errorf("client_key_file: %w", err)
	}
	c.mu.Lock()
	if c.cert != nil && cs == c.certStamp && ks == c.keyStamp {
		defer c.mu.Unlock()
		return c.cert, nil
	}
	pair, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		c.mu.Unlock()
		return nil, fmt.Errorf("client certificate %s: %w", c.certFile, err)
	}
	rotated := c.cert != nil
	c.cert, c.certStamp, c.keyStamp = &pair, cs, ks
	c.mu.Unlock()
	if rotated && c.onRotate != nil {
		c.onRotate()
	}
	return &pair, nil
}

// tokenClient builds the HTTP client for a token endpoint that needs a
// client certificate and/or a private CA. Either may be empty.
func tokenClient(certFile, keyFile, caFile string) (*http.Client, *clientCert, error) {
	t := defaultClient().Transport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, nil, fmt.Errorf("ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, nil, fmt.Errorf("ca_file %s: no PEM certificates", caFile)
		}
		t.TLSClientConfig.RootCAs = pool
	}
	var cc *clientCert
	if certFile != "" {
		// A rotated certificate must be presented at once, not when pooled
		// connections made with the old one happen to close.
		cc = &clientCert{certFile: certFile, keyFile: keyFile, onRotate: t.CloseIdleConnections}
		if _, err := cc.get(); err != nil {
			return nil, nil, err
		}
		t.TLSClientConfig.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return cc.get()
		}
	}
	return &http.Client{
		Transport:     t,
		Timeout:       2 * time.Minute,
		CheckRedirect: defaultClient().CheckRedirect,
	}, cc, nil
}
