package sds

import (
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/cache"
)

// TestInvalidateReachesSubscribers: `tokenbroker invalidate` drops the
// cached token, and push mode's subscribers get a new one at once; with the
// IdP down they get the fail-closed value, never the dropped token.
func TestInvalidateReachesSubscribers(t *testing.T) {
	eachProtocol(t, func(t *testing.T, delta bool) {
		s := newStack(t, billingYAML, stackOpts{})
		sub := subscribe(t, s.dial(""), delta, "envoy", "billing")
		first := sub.next().values["billing"]
		key := cache.Key{ID: s.parse(billingYAML).Credentials["billing"].Identity(), Name: "billing"}

		s.tokens.Invalidate(key)
		s.sds.Invalidate("billing")
		if v := sub.next().values["billing"]; !strings.HasPrefix(v, "Bearer ") || v == first {
			t.Fatalf("after invalidate: got %q, want a new token", v)
		}

		s.idp.SetDown(503, `{"error":"temporarily_unavailable"}`, "")
		s.tokens.Invalidate(key)
		s.sds.Invalidate("billing")
		if u := sub.next(); u.values["billing"] != "" {
			t.Fatalf("invalidated with the IdP down: got %q, want the fail-closed value", u.values["billing"])
		}
		s.sds.Invalidate("unknown") // a name no one subscribes to is no work
	})
}

// TestReloadToAnotherIdentityFailsClosedWithoutAToken: a reload that changes
// what a credential's token is (here its scopes) while the IdP is down does
// not leave subscribers on the token of the old configuration.
func TestReloadToAnotherIdentityFailsClosedWithoutAToken(t *testing.T) {
	s := newStack(t, billingYAML, stackOpts{})
	sub := subscribe(t, s.dial(""), false, "envoy", "billing")
	if v := sub.next().values["billing"]; !strings.HasPrefix(v, "Bearer ") {
		t.Fatalf("got %q", v)
	}
	s.idp.SetDown(503, `{"error":"temporarily_unavailable"}`, "")
	s.reload(strings.Replace(billingYAML, "scopes: [billing:read]", "scopes: [billing:write]", 1))
	if u := sub.next(); u.values["billing"] != "" {
		t.Fatalf("new identity, no token: got %q, want the fail-closed value", u.values["billing"])
	}
}
