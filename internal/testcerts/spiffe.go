package testcerts

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"testing"
	"time"
)

// IssueSPIFFE makes a client certificate whose only URI SAN is id (a SPIFFE
// ID such as spiffe://cluster.local/ns/payments/sa/api), as SPIRE or Istio
// issue them, and returns it and its PKCS#8 key in PEM.
func (c *CA) IssueSPIFFE(t testing.TB, id string) (certPEM, keyPEM []byte) {
	t.Helper()
	u, err := url.Parse(id)
	if err != nil {
		t.Fatal(err)
	}
	return c.issueURIs(t, []*url.URL{u})
}

// issueURIs makes a client certificate carrying exactly uris as URI SANs.
func (c *CA) issueURIs(t testing.TB, uris []*url.URL) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial.Add(1)), Subject: pkix.Name{CommonName: "workload"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs: uris}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.Cert, &key.PublicKey, c.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

// IssueURIs makes a client certificate with several URI SANs (a malformed
// SPIFFE SVID, which must carry exactly one).
func (c *CA) IssueURIs(t testing.TB, ids ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	var uris []*url.URL
	for _, id := range ids {
		u, err := url.Parse(id)
		if err != nil {
			t.Fatal(err)
		}
		uris = append(uris, u)
	}
	return c.issueURIs(t, uris)
}
