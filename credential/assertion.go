package credential

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// ClientAssertionType is the client_assertion_type of RFC 7523 §2.2.
const ClientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// AssertionLifetime is how long a client assertion is valid from the moment
// it is signed: long enough to cross a slow network, short enough that a
// captured one is soon useless.
const AssertionLifetime = time.Minute

// AssertionBackdate is how far before now a client assertion's iat and nbf
// are set. Some IdPs check them to the second with no leeway (Ory Hydra
// answers 500 to an iat in its future), so a clock a second ahead of the
// IdP's would fail every mint. golang.org/x/oauth2's jws package back-dates
// iat by the same 10 s ("Reverting time back for machines whose time is not
// perfectly in sync", jws.go ClaimSet.encode). exp is not moved: it stays
// AssertionLifetime after now.
const AssertionBackdate = 10 * time.Second

// assertionClaims are the claims of a client assertion (RFC 7523 §3).
func assertionClaims(clientID, aud string, now time.Time) (jwt.Claims, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return jwt.Claims{}, fmt.Errorf("client assertion jti: %w", err)
	}
	issued := now.Add(-AssertionBackdate)
	return jwt.Claims{
		Issuer:    clientID,
		Subject:   clientID,
		Audience:  jwt.Audience{aud},
		ID:        hex.EncodeToString(b[:]), // fresh per request: IdPs reject replays
		IssuedAt:  jwt.NewNumericDate(issued),
		NotBefore: jwt.NewNumericDate(issued),
		Expiry:    jwt.NewNumericDate(now.Add(AssertionLifetime)),
	}, nil
}

// errClockSkewHint is added to an IdP's 5xx answer to a client assertion:
// IdPs that check iat and nbf strictly answer a server error, not
// invalid_client, to an assertion from a clock running ahead of theirs.
var errClockSkewHint = fmt.Errorf("the IdP answered a server error to a client assertion: clock skew is a possible cause (iat and nbf are back-dated %s; check this host's clock against the IdP's)", AssertionBackdate)

// signAssertion signs a client assertion with signer.
func signAssertion(signer jose.Signer, clientID, aud string, now time.Time) (string, error) {
	cl, err := assertionClaims(clientID, aud, now)
	if err != nil {
		return "", err
	}
	s, err := jwt.Signed(signer).Claims(cl).Serialize()
	if err != nil {
		return "", fmt.Errorf("signing client assertion: %w", err)
	}
	return s, nil
}

// secretSigner signs client_secret_jwt assertions (HS256 with the client secret).
func secretSigner(secret string) (jose.Signer, error) {
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: []byte(secret)}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return nil, errors.New("client_secret_jwt: cannot build an HS256 signer") // no detail: it would be about the secret
	}
	return s, nil
}

// keyFile is a private key file that is parsed again when it changes, so a
// rotated key is used from the next mint on without a restart.
type keyFile struct {
	path, kid, alg string
	certPath       string // optional: thumbprints for x5t / x5t#S256

	mu     sync.Mutex // guards the fields below
	stamp  [2]fileStamp
	signer jose.Signer
	err    error
}

// signer returns the signer for the file's current content.
func (k *keyFile) current() (jose.Signer, error) {
	var st [2]fileStamp
	var err error
	if st[0], err = stampOf(k.path); err != nil {
		return nil, fmt.Errorf("private_key_file: %w", err)
	}
	if k.certPath != "" {
		if st[1], err = stampOf(k.certPath); err != nil {
			return nil, fmt.Errorf("certificate_file: %w", err)
		}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.signer != nil && st == k.stamp {
		return k.signer, nil
	}
	s, err := loadSigner(k.path, k.kid, k.alg, k.certPath)
	if err != nil {
		return nil, err
	}
	k.stamp, k.signer = st, s
	return s, nil
}

// loadSigner parses a PEM private key (PKCS#8, PKCS#1 or SEC 1) and builds
// a signer for alg ("" picks RS256 for RSA and ES256 for P-256).
func loadSigner(path, kid, alg, certPath string) (jose.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("private_key_file: %w", err)
	}
	key, err := parsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("private_key_file %s: %w", path, err)
	}
	var a jose.SignatureAlgorithm
	switch k := key.(type) {
	case *rsa.PrivateKey:
		switch alg {
		case "", "RS256":
			a = jose.RS256
		case "PS256":
			a = jose.PS256
		default:
			return nil, fmt.Errorf("private_key_file %s: an RSA key cannot sign %s", path, alg)
		}
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("private_key_file %s: only P-256 EC keys are supported (ES256)", path)
		}
		if alg != "" && alg != "ES256" {
			return nil, fmt.Errorf("private_key_file %s: an EC key cannot sign %s", path, alg)
		}
		a = jose.ES256
	default:
		return nil, fmt.Errorf("private_key_file %s: unsupported key type %T (want RSA or EC P-256)", path, key)
	}
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if certPath != "" {
		der, err := certificateDER(certPath)
		if err != nil {
			return nil, err
		}
		s1, s256 := sha1.Sum(der), sha256.Sum256(der)
		opts = opts.WithHeader("x5t", base64.RawURLEncoding.EncodeToString(s1[:])).
			WithHeader("x5t#S256", base64.RawURLEncoding.EncodeToString(s256[:]))
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: a, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, opts)
	if err != nil {
		return nil, fmt.Errorf("private_key_file %s: %w", path, err)
	}
	return s, nil
}

// certificateDER returns the first certificate of a PEM file.
func certificateDER(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("certificate_file: %w", err)
	}
	for {
		var blk *pem.Block
		if blk, b = pem.Decode(b); blk == nil {
			return nil, fmt.Errorf("certificate_file %s: no PEM certificate", path)
		}
		if blk.Type == "CERTIFICATE" {
			return blk.Bytes, nil
		}
	}
}

func parsePrivateKey(b []byte) (crypto.Signer, error) {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, errors.New("no PEM private key found")
		}
		switch blk.Type {
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
			if err != nil {
				return nil, errors.New("malformed PKCS#8 private key")
			}
			s, ok := k.(crypto.Signer)
			if !ok {
				return nil, fmt.Errorf("unsupported key type %T", k)
			}
			return s, nil
		case "RSA PRIVATE KEY":
			k, err := x509.ParsePKCS1PrivateKey(blk.Bytes)
			if err != nil {
				return nil, errors.New("malformed PKCS#1 RSA private key")
			}
			return k, nil
		case "EC PRIVATE KEY":
			k, err := x509.ParseECPrivateKey(blk.Bytes)
			if err != nil {
				return nil, errors.New("malformed EC private key")
			}
			return k, nil
		}
		// Skip other blocks such as EC PARAMETERS or a certificate.
	}
}

// fileStamp identifies a version of a file cheaply: a change of content
// through rename or rewrite changes the modification time or size (or the
// inode, for Kubernetes' symlink-swapping secret volumes).
type fileStamp struct {
	mod  time.Time
	size int64
}

func stampOf(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{mod: fi.ModTime(), size: fi.Size()}, nil
}
