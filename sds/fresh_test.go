package sds

import (
	"strings"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/cache"
)

// lease is the token the feed of name pushes, with its deadlines.
func (s *stack) lease(name string) cache.Lease {
	s.sds.mu.Lock()
	defer s.sds.mu.Unlock()
	return s.sds.feeds[name].lease
}

func (s *stack) failingClosed(name string) bool {
	s.sds.mu.Lock()
	defer s.sds.mu.Unlock()
	return s.sds.feeds[name].failClosed
}

func (s *stack) pushes(name, value string) float64 {
	return testutil.ToFloat64(s.sds.m.pushes.WithLabelValues(name, value))
}

// lookups counts Checks the cache answered: push mode must cause none.
func (s *stack) lookups() uint64 {
	var n uint64
	for _, st := range s.tokens.Snapshot() {
		n += st.Hits + st.Misses
	}
	return n
}

func TestEverySubscriberGetsTheNextTokenBeforeTheUsableEndWithoutChecks(t *testing.T) {
	eachProtocol(t, func(t *testing.T, delta bool) {
		s := newStack(t, billingYAML, stackOpts{lifetime: 10 * time.Minute})
		conn := s.dial("")
		subs := make([]*subscriber, 20)
		first := ""
		for i := range subs {
			subs[i] = subscribe(t, conn, delta, "envoy", "billing")
			if v := subs[i].next().values["billing"]; first == "" {
				first = v
			} else if v != first {
				t.Fatal("subscribers disagree")
			}
		}
		l := s.lease("billing")
		s.advanceTo(l.RefreshAt.Add(-time.Millisecond))
		if s.idp.Mints() != 1 {
			t.Fatalf("refreshed before the refresh point: %d mints", s.idp.Mints())
		}
		s.advanceTo(l.RefreshAt)
		if s.idp.Mints() != 2 {
			t.Fatalf("at the refresh point: %d mints, want 2", s.idp.Mints())
		}
		for i, sub := range subs {
			u := sub.next()
			if v := u.values["billing"]; v == first || !strings.HasPrefix(v, "Bearer ") {
				t.Fatalf("subscriber %d got %q after the refresh", i, v)
			}
		}
		if !s.clock.Now().Before(l.Until) {
			t.Fatal("the new value came at or after the old token's usable end")
		}
		if n := s.lookups(); n != 0 {
			t.Fatalf("the cache answered %d lookups: push mode must need no Check", n)
		}
		// And the next lifetime the same way, still without a Check.
		l2 := s.lease("billing")
		s.advanceTo(l2.RefreshAt)
		for _, sub := range subs {
			sub.next()
		}
		if s.idp.Mints() != 3 || s.lookups() != 0 {
			t.Fatalf("second refresh: %d mints, %d lookups", s.idp.Mints(), s.lookups())
		}
	})
}

func TestIdPDownFailsClosedAtTheUsableEndAndRecovers(t *testing.T) {
	eachProtocol(t, func(t *testing.T, delta bool) {
		s := newStack(t, billingYAML, stackOpts{lifetime: 10 * time.Minute})
		sub := subscribe(t, s.dial(""), delta, "envoy", "billing")
		token := sub.next().values["billing"]
		l := s.lease("billing")

		s.idp.SetDown(503, `{"error":"temporarily_unavailable"}`, "")
		s.advanceTo(l.RefreshAt)
		s.advanceTo(l.Until.Add(-time.Millisecond))
		if s.failingClosed("billing") || s.pushes("billing", "fail_closed") != 0 {
			t.Fatal("fail-closed value pushed before the usable end")
		}
		if s.lease("billing").Token.Value != l.Token.Value {
			t.Fatal("the token changed while the IdP was down")
		}
		s.advanceTo(l.Until)
		if !s.failingClosed("billing") {
			t.Fatal("still serving the token at its usable end")
		}
		if u := sub.next(); u.values["billing"] != "" || len(u.values) != 1 {
			t.Fatalf("at the usable end got %q, want the empty (fail-closed) value", u.values["billing"])
		}
		if s.pushes("billing", "fail_closed") != 1 {
			t.Fatalf("fail_closed pushes = %v", s.pushes("billing", "fail_closed"))
		}
		if !strings.Contains(s.logText(), "usable end without a replacement") {
			t.Fatal("the outage is not logged")
		}

		s.idp.SetDown(0, "", "")
		s.sds.mu.Lock()
		retry := s.sds.feeds["billing"].retryAt
		s.sds.mu.Unlock()
		s.advanceTo(retry)
		u := sub.next()
		if v := u.values["billing"]; !strings.HasPrefix(v, "Bearer ") || v == token {
			t.Fatalf("IdP back: got %q, want a new token", v)
		}
		if s.failingClosed("billing") {
			t.Fatal("still fail-closed after recovery")
		}
	})
}

func TestNoTokenAtSubscriptionPushesFailClosed(t *testing.T) {
	s := newStack(t, billingYAML, stackOpts{})
	s.idp.SetDown(503, "", "")
	sub := subscribe(t, s.dial(""), false, "envoy", "billing")
	if u := sub.next(); len(u.values) != 1 || u.values["billing"] != "" {
		t.Fatalf("no token obtainable: got %v, want the fail-closed value", u.values)
	}
	s.idp.SetDown(0, "", "")
	s.sds.mu.Lock()
	retry := s.sds.feeds["billing"].retryAt
	s.sds.mu.Unlock()
	s.advanceTo(retry)
	if v := sub.next().values["billing"]; !strings.HasPrefix(v, "Bearer ") {
		t.Fatalf("IdP back: got %q", v)
	}
}

func TestReloadRescopesRevokesAndAddsCredentials(t *testing.T) {
	eachProtocol(t, func(t *testing.T, delta bool) {
		s := newStack(t, scopedYAML, stackOpts{tls: true})
		inside := subscribe(t, s.dial(insideID), delta, "a", "billing")
		if v := inside.next().values["billing"]; !strings.HasPrefix(v, "Bearer ") {
			t.Fatalf("inside got %q", v)
		}
		outside := subscribe(t, s.dial(outsideID), delta, "b", "billing", "later")
		if !delta {
			if u := outside.next(); len(u.values) != 0 {
				t.Fatalf("outside got %v", u.values)
			}
		}

		// billing moves to the other namespace; a credential "later" appears.
		s.reload(strings.Replace(strings.Replace(scopedYAML, "ns/billing/sa/*", "ns/web/sa/*", 1),
			"  public:", "  later:\n    type: static\n    value: later-value\n    format: \"{token}\"\n  public:", 1))
		if u := inside.next(); len(u.values) != 1 || u.values["billing"] != "" {
			t.Fatalf("re-scoped out: got %v, want the fail-closed value", u.values)
		}
		got := map[string]string{}
		for len(got) < 2 {
			for k, v := range outside.next().values {
				got[k] = v
			}
		}
		if !strings.HasPrefix(got["billing"], "Bearer ") || got["later"] != "later-value" {
			t.Fatalf("re-scoped in / new credential: got %v", got)
		}

		// billing is removed altogether.
		s.reload(strings.ReplaceAll(strings.ReplaceAll(scopedYAML, "billing:\n", "gone:\n"), "credential: billing", "credential: gone"))
		// The last configuration has neither billing nor later.
		got = map[string]string{}
		for len(got) < 2 {
			for k, v := range outside.next().values {
				got[k] = v
			}
		}
		if v, ok := got["billing"]; !ok || v != "" || got["later"] != "" {
			t.Fatalf("removed credentials: got %v, want their fail-closed values", got)
		}
		if n := s.sds.Subscribers()["billing"]; n != 0 {
			t.Fatalf("removed credential still has %d subscribers", n)
		}
	})
}

func TestNACKKeepsTheStreamAndTheNextValueArrives(t *testing.T) {
	s := newStack(t, billingYAML, stackOpts{lifetime: 10 * time.Minute})
	sub := subscribe(t, s.dial(""), false, "envoy", "billing")
	sub.ack = false
	u := sub.next()
	if err := sub.sotw.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resource.SecretType, ResourceNames: sub.names,
		ResponseNonce: u.nonce, ErrorDetail: &rpcstatus.Status{Code: int32(codes.InvalidArgument), Message: "Unexpected SDS secret"}}); err != nil {
		t.Fatal(err)
	}
	sub.ack = true
	// go-control-plane answers a NACK naming no accepted version at once,
	// with nothing new (the rejected value counts as sent): Envoy ACKs that.
	if r := sub.next(); len(r.values) != 0 {
		t.Fatalf("answer to the NACK: %v", r.values)
	}
	s.advanceTo(s.lease("billing").RefreshAt)
	if v := sub.next().values["billing"]; v == u.values["billing"] || v == "" {
		t.Fatalf("after a NACK the next value did not arrive: %q", v)
	}
	if got := testutil.ToFloat64(s.sds.m.nacks); got != 1 {
		t.Fatalf("nacks = %v", got)
	}
	if n := strings.Count(s.logText(), "rejected a secret (NACK)"); n != 1 {
		t.Fatalf("%d NACK log lines", n)
	}
}

func TestPushLagIsMeasuredToTheLastACK(t *testing.T) {
	s := newStack(t, withCredentials(`  other:
    type: static
    value: other-value
    format: "{token}"
  more:
    token_url: IDP/oauth/token
    client_id: svc-maps
    client_secret: ${BILLING_SECRET}
`), stackOpts{lifetime: 10 * time.Minute})
	conn := s.dial("")
	a, b := subscribe(t, conn, false, "a", "billing"), subscribe(t, conn, true, "b", "billing")
	for _, sub := range []*subscriber{a, b} {
		sub.next()
		// Requests on a stream are handled in order: once the answer to a
		// later one arrives, the ACK before it has been accounted.
		sub.subscribeMore("other")
		if v := sub.next().values["other"]; v != "other-value" {
			t.Fatalf("other = %q", v)
		}
	}
	s.advanceTo(s.lease("billing").RefreshAt)
	b.ack = false
	a.next()
	u := b.next()
	s.clock.Advance(3 * time.Second) // b acknowledges three (manual) seconds later
	if err := b.dlt.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resource.SecretType, ResponseNonce: u.nonce}); err != nil {
		t.Fatal(err)
	}
	b.ack = true
	b.subscribeMore("more")
	if r := b.next(); !strings.HasPrefix(r.values["more"], "Bearer ") {
		t.Fatalf("more: %d values, none a token", len(r.values))
	}
	if got := histogramSum(t, s, "billing"); got < 3 || got > 3.5 {
		t.Fatalf("push lag sum = %v s, want about 3 (the late ACK)", got)
	}
}

func histogramSum(t *testing.T, s *stack, name string) float64 {
	t.Helper()
	mfs, err := s.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "tokenbroker_sds_push_lag_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == name {
				return m.GetHistogram().GetSampleSum()
			}
		}
	}
	return -1
}

func TestReconnectGetsTheCurrentValueWithoutAMint(t *testing.T) {
	eachProtocol(t, func(t *testing.T, delta bool) {
		s := newStack(t, billingYAML, stackOpts{})
		conn := s.dial("")
		first := subscribe(t, conn, delta, "envoy", "billing")
		v := first.next().values["billing"]
		if delta {
			_ = first.dlt.CloseSend()
		} else {
			_ = first.sotw.CloseSend()
		}
		if err := first.closed(); err != nil {
			t.Fatal(err)
		}
		again := subscribe(t, conn, delta, "envoy", "billing")
		if got := again.next().values["billing"]; got != v {
			t.Fatalf("reconnect got %q, want %q", got, v)
		}
		if s.idp.Mints() != 1 {
			t.Fatalf("reconnect minted: %d", s.idp.Mints())
		}
	})
}

func TestNeverACKingSubscriberHoldsOneResponse(t *testing.T) {
	s := newStack(t, billingYAML, stackOpts{lifetime: 10 * time.Minute})
	conn := s.dial("")
	acker, silent := subscribe(t, conn, false, "a", "billing"), subscribe(t, conn, false, "s", "billing")
	silent.ack = false
	acker.next()
	silent.next()
	const refreshes = 20
	for range refreshes {
		s.advanceTo(s.lease("billing").RefreshAt)
		acker.next()
	}
	// Each value went to the acknowledging stream; the silent one got the
	// first and nothing since: no watch, no queue, nothing growing.
	if got := s.pushes("billing", "token"); got != refreshes+2 {
		t.Fatalf("pushes = %v, want %d", got, refreshes+2)
	}
	s.sds.mu.Lock()
	defer s.sds.mu.Unlock()
	for _, st := range s.sds.streams {
		if n := st.id.cache.NumWatches("billing"); n > 1 { // the acker's, once its ACK is in
			t.Fatalf("%d watches open, want at most 1", n)
		}
	}
}

func TestStopEndsStreamsAndRefusesNewOnes(t *testing.T) {
	s := newStack(t, billingYAML, stackOpts{})
	conn := s.dial("")
	sotw, delta := subscribe(t, conn, false, "a", "billing"), subscribe(t, conn, true, "b", "billing")
	sotw.next()
	delta.next()
	s.sds.Stop()
	for _, sub := range []*subscriber{sotw, delta} {
		if err := sub.closed(); err != nil {
			t.Fatalf("stream ended with %v, want a clean end", err)
		}
	}
	if err := subscribe(t, conn, false, "c", "billing").closed(); status.Code(err) != codes.Unavailable {
		t.Fatalf("new stream after Stop: %v, want Unavailable", err)
	}
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop() // returns at once: no SDS stream holds the drain
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(recvTimeout):
		t.Fatal("GracefulStop still waiting after Stop")
	}
	if s.sds.Streams() != 0 {
		t.Fatalf("%d streams after Stop", s.sds.Streams())
	}
}
