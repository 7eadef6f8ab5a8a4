package sds

import (
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/cache"
)

// retime applies new cache settings as a reload does: the cache first,
// then push mode's Resync.
func (s *stack) retime(margin time.Duration, refreshAhead float64) {
	s.t.Helper()
	if err := s.tokens.Reconfigure(cache.Settings{ExpiryMargin: margin, RefreshAhead: refreshAhead}); err != nil {
		s.t.Fatal(err)
	}
	s.sds.Resync()
	s.settle()
}

// TestResyncRaisedMarginRefreshesBeforeTheNewUsableEnd: a reload raising
// cache.expiry_margin moves the token's usable end earlier; the feed
// re-times without a mint or a push, and its subscribers get the next
// token before the NEW usable end.
func TestResyncRaisedMarginRefreshesBeforeTheNewUsableEnd(t *testing.T) {
	eachProtocol(t, func(t *testing.T, delta bool) {
		s := newStack(t, billingYAML, stackOpts{lifetime: 10 * time.Minute})
		sub := subscribe(t, s.dial(""), delta, "envoy", "billing")
		first := sub.next().values["billing"]
		old := s.lease("billing") // usable until expiry − 30s
		s.advanceTo(s.clock.Now().Add(time.Minute))

		s.retime(5*time.Minute, 0.2)
		l := s.lease("billing")
		if s.idp.Mints() != 1 || s.pushes("billing", "token") != 1 {
			t.Fatalf("re-timing: %d mints, %v pushes; want 1 and 1", s.idp.Mints(), s.pushes("billing", "token"))
		}
		if l.Token.Value != old.Token.Value || !l.Until.Equal(old.Token.Expiry.Add(-5*time.Minute)) || !l.RefreshAt.Before(old.RefreshAt) {
			t.Fatalf("feed not re-timed: until %v refresh %v (old until %v refresh %v)", l.Until, l.RefreshAt, old.Until, old.RefreshAt)
		}
		s.advanceTo(l.RefreshAt.Add(-time.Millisecond))
		if s.idp.Mints() != 1 {
			t.Fatal("refreshed before the new refresh point")
		}
		s.advanceTo(l.RefreshAt)
		if v := sub.next().values["billing"]; v == first || !strings.HasPrefix(v, "Bearer ") {
			t.Fatalf("at the new refresh point got %q, want the next token", v)
		}
		if !s.clock.Now().Before(l.Until) || s.idp.Mints() != 2 || s.pushes("billing", "token") != 2 {
			t.Fatalf("next token: %d mints, %v pushes, at %v (new usable end %v)", s.idp.Mints(), s.pushes("billing", "token"), s.clock.Now(), l.Until)
		}
	})
}

// TestResyncRaisedMarginFailsClosedAtTheNewUsableEnd: the IdP down, the
// fail-closed value comes at the new usable end, not the old one.
func TestResyncRaisedMarginFailsClosedAtTheNewUsableEnd(t *testing.T) {
	eachProtocol(t, func(t *testing.T, delta bool) {
		s := newStack(t, billingYAML, stackOpts{lifetime: 10 * time.Minute})
		sub := subscribe(t, s.dial(""), delta, "envoy", "billing")
		sub.next()
		old := s.lease("billing")
		s.advanceTo(s.clock.Now().Add(time.Minute))
		s.retime(5*time.Minute, 0.2)
		l := s.lease("billing")
		s.idp.SetDown(503, `{"error":"temporarily_unavailable"}`, "")

		s.advanceTo(l.RefreshAt)
		s.advanceTo(l.Until.Add(-time.Millisecond))
		if s.failingClosed("billing") || s.pushes("billing", "fail_closed") != 0 {
			t.Fatal("fail-closed value pushed before the new usable end")
		}
		s.advanceTo(l.Until)
		if !s.failingClosed("billing") {
			t.Fatal("still serving the token at its new usable end")
		}
		if u := sub.next(); u.values["billing"] != "" {
			t.Fatalf("at the new usable end got %q, want the fail-closed value", u.values["billing"])
		}
		if !l.Until.Before(old.Until) {
			t.Fatal("the usable end did not move earlier")
		}
	})
}

// TestResyncPastTheNewUsableEnd: a margin raised so far that the token is
// already unusable replaces it with the fail-closed value at once and then
// with a new token (or keeps the fail-closed value, the IdP down).
func TestResyncPastTheNewUsableEnd(t *testing.T) {
	for _, down := range []bool{false, true} {
		t.Run(map[bool]string{false: "idp_up", true: "idp_down"}[down], func(t *testing.T) {
			s := newStack(t, billingYAML, stackOpts{lifetime: 10 * time.Minute})
			sub := subscribe(t, s.dial(""), false, "envoy", "billing")
			first := sub.next().values["billing"]
			s.advanceTo(s.clock.Now().Add(6 * time.Minute)) // before the old refresh point (7.6 min)
			if down {
				s.idp.SetDown(503, `{"error":"temporarily_unavailable"}`, "")
			}
			s.retime(5*time.Minute, 0.2) // usable end: 5 min after the mint, passed
			if down {
				if u := sub.next(); u.values["billing"] != "" {
					t.Fatalf("past the new usable end got %q, want the fail-closed value", u.values["billing"])
				}
				if !s.failingClosed("billing") || s.idp.Mints() != 1 {
					t.Fatalf("IdP down: fail-closed %v, %d mints", s.failingClosed("billing"), s.idp.Mints())
				}
				return
			}
			// The fail-closed value came first, unless the new token
			// replaced it before go-control-plane sent it (a subscriber
			// gets the latest version): either way never the old token.
			v := sub.next().values["billing"]
			if v == "" {
				v = sub.next().values["billing"]
			}
			if v == first || !strings.HasPrefix(v, "Bearer ") {
				t.Fatalf("past the new usable end got %q, want a new token (after at most the fail-closed value)", v)
			}
			if s.idp.Mints() != 2 || s.failingClosed("billing") {
				t.Fatalf("%d mints, fail-closed %v; want 2, false", s.idp.Mints(), s.failingClosed("billing"))
			}
		})
	}
}

// TestResyncDueUnderTheNewRefreshPoint: a raised refresh_ahead that puts
// the refresh point in the past refreshes now, with no fail-closed value.
func TestResyncDueUnderTheNewRefreshPoint(t *testing.T) {
	s := newStack(t, billingYAML, stackOpts{lifetime: 10 * time.Minute})
	sub := subscribe(t, s.dial(""), true, "envoy", "billing")
	first := sub.next().values["billing"]
	s.advanceTo(s.clock.Now().Add(2 * time.Minute))
	s.retime(30*time.Second, 0.9) // refresh from 57s after the mint
	if v := sub.next().values["billing"]; v == first || !strings.HasPrefix(v, "Bearer ") {
		t.Fatalf("due under the new refresh point: got %q, want a new token", v)
	}
	if s.idp.Mints() != 2 || s.pushes("billing", "fail_closed") != 0 {
		t.Fatalf("%d mints, %v fail-closed pushes; want 2 and 0", s.idp.Mints(), s.pushes("billing", "fail_closed"))
	}
}

// TestResyncKeepingTheTokenUsableMintsAndPushesNothing: new settings under
// which the token stays valid and not due cost no mint and no push: the
// next response a subscriber gets is the next token, one push later.
func TestResyncKeepingTheTokenUsableMintsAndPushesNothing(t *testing.T) {
	eachProtocol(t, func(t *testing.T, delta bool) {
		s := newStack(t, billingYAML, stackOpts{lifetime: 10 * time.Minute})
		sub := subscribe(t, s.dial(""), delta, "envoy", "billing")
		first := sub.next()
		s.advanceTo(s.clock.Now().Add(time.Minute))
		s.retime(31*time.Second, 0.2)
		s.retime(31*time.Second, 0.25)
		s.sds.Resync() // with the settings unchanged
		s.settle()
		l := s.lease("billing")
		if !l.Until.Equal(l.Token.Expiry.Add(-31 * time.Second)) {
			t.Fatalf("usable end %v, want expiry − 31s", l.Until)
		}
		if s.idp.Mints() != 1 || s.pushes("billing", "token") != 1 || s.pushes("billing", "fail_closed") != 0 {
			t.Fatalf("%d mints, %v token pushes, %v fail-closed; want 1, 1, 0",
				s.idp.Mints(), s.pushes("billing", "token"), s.pushes("billing", "fail_closed"))
		}
		s.tokens.Invalidate(s.billingKey())
		s.sds.Invalidate("billing")
		u := sub.next()
		if v := u.values["billing"]; v == first.values["billing"] || !strings.HasPrefix(v, "Bearer ") {
			t.Fatalf("the response after the re-timing carries %q, want the invalidation's new token", v)
		}
		if s.pushes("billing", "token") != 2 {
			t.Fatalf("%v token pushes, want 2", s.pushes("billing", "token"))
		}
	})
}
