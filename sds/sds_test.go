package sds

import (
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func eachProtocol(t *testing.T, f func(t *testing.T, delta bool)) {
	for _, delta := range []bool{false, true} {
		name := "sotw"
		if delta {
			name = "delta"
		}
		t.Run(name, func(t *testing.T) { f(t, delta) })
	}
}

func TestSubscribeGetsWhatCheckInjects(t *testing.T) {
	eachProtocol(t, func(t *testing.T, delta bool) {
		t.Setenv("MAPS_KEY", "maps-key-0042")
		s := newStack(t, withCredentials(`  maps:
    type: static
    value: ${MAPS_KEY}
    header: x-api-key
    format: "{token}"
`), stackOpts{})
		conn := s.dial("")
		sub := subscribe(t, conn, delta, "envoy-1", "billing", "maps")
		got := map[string]string{}
		for len(got) < 2 {
			for k, v := range sub.next().values {
				got[k] = v
			}
		}
		if s.idp.Mints() != 1 {
			t.Fatalf("mints = %d, want 1 (the subscription's cold mint)", s.idp.Mints())
		}
		for _, name := range []string{"billing", "maps"} {
			if want := s.check(conn, name); got[name] != want {
				t.Errorf("%s: pushed %q, Check injects %q", name, got[name], want)
			}
		}
		if !strings.HasPrefix(got["billing"], "Bearer ") || got["maps"] != "maps-key-0042" {
			t.Fatalf("values %q", got)
		}
		if s.idp.Mints() != 1 {
			t.Fatalf("the Check minted again: %d mints", s.idp.Mints())
		}
		if n := s.sds.Subscribers()["billing"]; n != 1 {
			t.Fatalf("subscribers = %d", n)
		}
		if strings.Contains(s.logText(), strings.TrimPrefix(got["billing"], "Bearer ")) || strings.Contains(s.logText(), "maps-key-0042") {
			t.Fatal("a token reached the logs")
		}
	})
}

const scopedYAML = `
credentials:
  billing:
    token_url: IDP/oauth/token
    client_id: svc-billing
    client_secret: ${BILLING_SECRET}
    allowed_sources: [spiffe://cluster.local/ns/billing/sa/*]
  public:
    type: static
    value: public-value
    format: "{token}"
routes:
  - host: billing.example.com
    credential: billing
cache:
  expiry_margin: 30s
  refresh_ahead: 0.2
`

const (
	insideID  = "spiffe://cluster.local/ns/billing/sa/api"
	outsideID = "spiffe://cluster.local/ns/web/sa/frontend"
)

func TestSPIFFEIdentityDecidesNotTheNodeID(t *testing.T) {
	eachProtocol(t, func(t *testing.T, delta bool) {
		s := newStack(t, scopedYAML, stackOpts{tls: true})
		inside, outside := s.dial(insideID), s.dial(outsideID)

		allowed := subscribe(t, inside, delta, "sidecar~10.0.0.1~api.billing~billing.svc.cluster.local", "billing")
		u := allowed.next()
		if !strings.HasPrefix(u.values["billing"], "Bearer ") {
			t.Fatalf("allowed identity got %v", u.values)
		}
		// The outsider declares the insider's node id, then its principal,
		// then the identity key this server uses internally: none of it counts.
		for _, forged := range []string{"sidecar~10.0.0.1~api.billing~billing.svc.cluster.local", insideID,
			identityKey(insideID, "127.0.0.1")} {
			denied := subscribe(t, outside, delta, forged, "billing")
			if delta {
				// Delta answers nothing for a refused name. Subscribe the same
				// stream to a credential anyone may have: its response, which
				// follows the first request's processing, carries that alone.
				denied.subscribeMore("public")
				if u := denied.next(); len(u.values) != 1 || u.values["public"] != "public-value" {
					t.Fatalf("outside identity with node id %q got %v", forged, u.values)
				}
			} else if u := denied.next(); len(u.values) != 0 {
				t.Fatalf("outside identity with node id %q got %v", forged, u.values)
			}
		}
		if got := testutil.ToFloat64(s.sds.m.rejected.WithLabelValues(rejectNotAllowed)); got != 3 {
			t.Fatalf("rejected not_allowed = %v, want 3", got)
		}
		// Logged once per stream, with the identity, without the value.
		logs := s.logText()
		if n := strings.Count(logs, "SDS subscription refused"); n != 3 {
			t.Fatalf("%d refusal log lines, want 3", n)
		}
		if !strings.Contains(logs, outsideID) || strings.Contains(logs, strings.TrimPrefix(u.values["billing"], "Bearer ")) {
			t.Fatal("refusal log lacks the identity or holds the token")
		}
		if s.sds.Subscribers()["billing"] != 1 {
			t.Fatalf("subscribers %v", s.sds.Subscribers())
		}
	})
}

func TestUnknownNameGetsNoResource(t *testing.T) {
	s := newStack(t, billingYAML, stackOpts{})
	sub := subscribe(t, s.dial(""), false, "n", "no-such-credential")
	if u := sub.next(); len(u.values) != 0 {
		t.Fatalf("unknown name answered with %v", u.values)
	}
	if got := testutil.ToFloat64(s.sds.m.rejected.WithLabelValues(rejectUnknown)); got != 1 {
		t.Fatalf("rejected unknown = %v", got)
	}
	if s.idp.Mints() != 0 {
		t.Fatal("an unknown name caused a mint")
	}
}

func TestBadRequestsCloseTheStream(t *testing.T) {
	s := newStack(t, billingYAML, stackOpts{})
	s.sds.lim.names = 3
	conn := s.dial("")
	for _, tc := range []struct {
		name  string
		delta bool
		names []string
	}{
		{"too many names", false, []string{"a", "b", "c", "d"}},
		{"too many names, delta", true, []string{"a", "b", "c", "d"}},
		{"name too long", false, []string{strings.Repeat("x", MaxNameBytes+1)}},
		{"wildcard", false, []string{"*"}},
		{"wildcard, delta", true, []string{"*"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sub := subscribe(t, conn, tc.delta, "n", tc.names...)
			if err := sub.closed(); status.Code(err) != codes.InvalidArgument {
				t.Fatalf("stream ended with %v, want InvalidArgument", err)
			}
		})
	}
	if got := testutil.ToFloat64(s.sds.m.rejected.WithLabelValues(rejectBadRequest)); got != 5 {
		t.Fatalf("rejected bad_request = %v", got)
	}
	if s.sds.Streams() != 0 {
		t.Fatalf("%d streams left", s.sds.Streams())
	}
}

func TestStreamBoundsRefuseMore(t *testing.T) {
	s := newStack(t, billingYAML, stackOpts{tls: true})
	s.sds.lim.perIdentity, s.sds.lim.streams = 2, 3
	a, b := s.dial(insideID), s.dial(outsideID)
	for i := range 2 {
		subscribe(t, a, false, "a", "billing").next()
		_ = i
	}
	if err := subscribe(t, a, false, "a", "billing").closed(); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("third stream of one identity: %v, want ResourceExhausted", err)
	}
	// Another identity still gets a stream: one caller cannot take them all...
	subscribe(t, b, false, "b", "billing").next()
	// ...until the process bound.
	if err := subscribe(t, b, false, "b", "billing").closed(); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("stream past the process bound: %v, want ResourceExhausted", err)
	}
	if got := testutil.ToFloat64(s.sds.m.rejected.WithLabelValues(rejectOverLimit)); got != 2 {
		t.Fatalf("rejected too_many_streams = %v", got)
	}
}

func TestOneMintForManySubscribers(t *testing.T) {
	s := newStack(t, billingYAML, stackOpts{})
	conn := s.dial("")
	subs := make([]*subscriber, 200)
	for i := range subs {
		subs[i] = subscribe(t, conn, i%2 == 1, fmt.Sprintf("envoy-%d", i), "billing")
	}
	var first string
	for _, sub := range subs {
		v := sub.next().values["billing"]
		if first == "" {
			first = v
		}
		if v != first || v == "" {
			t.Fatalf("subscribers disagree: %q vs %q", v, first)
		}
	}
	if s.idp.Mints() != 1 {
		t.Fatalf("200 cold subscriptions: %d mints, want 1", s.idp.Mints())
	}
	if n := s.sds.Subscribers()["billing"]; n != 200 {
		t.Fatalf("subscribers = %d", n)
	}
}
