package sds

import (
	"context"
	"net"
	"net/netip"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// identity is one verified subscriber identity: the principal of its TLS
// client certificate and its address. allowed_sources may allow either, so
// both are part of it: two Envoys with one SPIFFE ID but different
// addresses can be allowed different credentials.
type identity struct {
	key       string // strconv-quoted principal and address: unambiguous
	principal string // the certificate's URI SAN (SPIFFE ID); "" without a verified one
	address   string // the peer's IP address

	// node replaces the node every request of this identity declares, and
	// is what the watcher routes by (by pointer: a client cannot make one).
	node *corev3.Node
	// cache holds exactly what this identity may have: the credentials its
	// streams subscribe to and are allowed, and the fail-closed value of
	// those a reload took away from it.
	cache *cachev3.LinearCache

	streams map[*stream]struct{}
	subs    map[string]int  // credential name → how many of its streams subscribe to it
	held    map[string]held // what cache holds, by credential name
}

// held is what an identity's cache holds for one credential.
type held struct {
	gen     uint64 // the feed generation published (0 with revoked)
	revoked bool   // the fail-closed value of a credential no longer allowed
}

// peerIdentity reads who is at the other end of an SDS stream from what the
// TLS handshake verified, never from anything the client sends. The
// principal is the URI SAN of a client certificate that chained to
// listen.tls.client_ca_file, when it carries exactly one (a SPIFFE SVID
// carries one; with several, which one counts would be a guess, so none
// does). Without TLS client certificates the identity is the address alone.
func peerIdentity(ctx context.Context) (principal, address string) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", ""
	}
	if a, ok := p.Addr.(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			address = ip.Unmap().String()
		}
	}
	if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 && len(ti.State.PeerCertificates) > 0 {
		if uris := ti.State.PeerCertificates[0].URIs; len(uris) == 1 {
			principal = uris[0].String()
		}
	}
	return principal, address
}

func identityKey(principal, address string) string {
	return strconv.Quote(principal) + " " + strconv.Quote(address)
}

// budgetKey is what MaxStreamsPerIdentity counts streams by. A caller with
// a verified principal is its identity (principal and address: each Envoy
// of a service account has its own budget). One without is its address's
// network — the address for IPv4, its /64 for IPv6 — so a caller cannot
// multiply its budget by the addresses of one host or LAN.
func budgetKey(principal, address string) string {
	if principal != "" {
		return identityKey(principal, address)
	}
	return "addr " + addressNetwork(address)
}

// addressNetwork is the network one address-only caller is held to: an
// IPv4 address itself (/32), an IPv6 address's /64. Anything unparsable
// stays as it is.
func addressNetwork(address string) string {
	a, err := netip.ParseAddr(address)
	if err != nil {
		return address
	}
	a = a.Unmap()
	if a.Is4() {
		return a.String()
	}
	p, _ := a.Prefix(64) // drops any zone
	return p.String()
}
