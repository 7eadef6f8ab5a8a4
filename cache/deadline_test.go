package cache

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/credential"
)

// TestStampDecidesAsTheToken: for tokens and clocks with and without
// monotonic readings, any margin and refresh fraction, and instants at and
// around each deadline, a cell's stamp gives exactly the answer the token's
// own times give (Settings.until, Settings.refreshAt), or says it cannot.
// It can for the cases that serve traffic: a token minted here (monotonic)
// or read from the shared tier (wall clock), under a real clock.
func TestStampDecidesAsTheToken(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 8))
	base := time.Now() // monotonic
	dur := func(max time.Duration) time.Duration { return time.Duration(rng.Int64N(int64(max))) }
	instant := func(mono bool, d time.Duration) time.Time {
		if mono {
			return base.Add(d)
		}
		return base.Add(d).Round(0)
	}
	fast := 0
	for i := range 200_000 {
		set := Settings{ExpiryMargin: dur(2 * time.Hour), RefreshAhead: rng.Float64()}
		if i%7 == 0 {
			set.RefreshAhead = 0
		}
		em, im := rng.IntN(5) != 0, rng.IntN(5) != 0
		if rng.IntN(2) == 0 {
			im = em // mixed stamps are rare in practice; test both
		}
		issued := dur(48*time.Hour) - 24*time.Hour
		tok := &credential.Token{Issued: instant(im, issued), Expiry: instant(em, issued+dur(4*time.Hour)-time.Hour)}
		switch i % 50 {
		case 0:
			tok.Expiry = time.Time{} // no expiry at all
		case 1:
			tok.Expiry = time.Date(2500, 1, 1, 0, 0, 0, 0, time.UTC) // past Unix nanoseconds
		case 2:
			tok.Issued = time.Time{}
		}
		em, im = hasMono(tok.Expiry), hasMono(tok.Issued)
		// now: at, just before or after one of the deadlines, or anywhere.
		var at time.Time
		switch rng.IntN(4) {
		case 0:
			at = set.until(tok)
		case 1:
			at = set.refreshAt(tok)
		case 2:
			at = tok.Issued
		default:
			at = base.Add(dur(72*time.Hour) - 36*time.Hour)
		}
		nowMono := rng.IntN(4) != 0
		now := at.Add(time.Duration(rng.IntN(5)-2) * time.Nanosecond)
		if hasMono(now) != nowMono {
			now = instant(nowMono, now.Sub(base)) // same instant on the other clock
		}
		kind, exp, iss := stampOf(tok)
		ok, due, exact := set.decide(kind, exp, iss, now)
		wantOK := now.Before(set.until(tok))
		if exact {
			if (em && im && nowMono) || (!em && !im && wallOK(tok.Expiry) && wallOK(tok.Issued) && wallOK(now)) {
				t.Fatalf("case %d: stamp %d gave up on a token it should decide (expiry mono %v, issued mono %v, now mono %v)", i, kind, em, im, nowMono)
			}
			continue
		}
		fast++
		if ok != wantOK {
			t.Fatalf("case %d: usable %v, token says %v (stamp %d, margin %v, now %v, token %v–%v)", i, ok, wantOK, kind, set.ExpiryMargin, now, tok.Issued, tok.Expiry)
		}
		if wantDue := !now.Before(set.refreshAt(tok)); ok && due != wantDue {
			t.Fatalf("case %d: due %v, token says %v (stamp %d, ahead %v, now %v, token %v–%v)", i, due, wantDue, kind, set.RefreshAhead, now, tok.Issued, tok.Expiry)
		}
	}
	if fast < 100_000 {
		t.Fatalf("only %d of 200000 cases decided on the stamp", fast)
	}
}

// TestHitDecidesOnTheCellAlone: a hit on a stamped cell does not read the
// token. The token the cell points to is made to lie (its Expiry says it is
// long gone); the hit still answers from the stamp, which is what a
// hit reads. (When the stamp cannot decide, it does read the token: the
// test clock then strips monotonic readings.)
func TestHitDecidesOnTheCellAlone(t *testing.T) {
	var tb table
	set := Settings{}.withDefaults()
	now := time.Now()
	key := Key{ID: "k"}.Hashed()
	s, _ := tb.pin(key, func(k Key) *slot { return &slot{id: k.ID} })
	tok := &credential.Token{Value: "v", Issued: now, Expiry: now.Add(time.Hour)}
	tb.store(s, tok)
	tok.Expiry = now.Add(-time.Hour) // the lie
	if got, _ := tb.hit(key.hashOf(), key.ID, now, &set); got != tok {
		t.Fatal("a stamped hit read the token's Expiry instead of its cell")
	}
	if got, _ := tb.hit(key.hashOf(), key.ID, now.Round(0), &set); got != nil {
		t.Fatal("a clock without monotonic reading did not fall back to the token")
	}
	// A store puts the new token's stamp with it.
	tb.store(s, &credential.Token{Value: "w", Issued: now, Expiry: now.Add(set.ExpiryMargin / 2)})
	if got, _ := tb.hit(key.hashOf(), key.ID, now, &set); got != nil {
		t.Fatal("a hit handed out a token past its usable end")
	}
}

// TestHashedKeyFindsTheSameSlot: a key carrying its hash and one without
// reach the same slot, whichever made it.
func TestHashedKeyFindsTheSameSlot(t *testing.T) {
	var tb table
	newSlot := func(k Key) *slot { return &slot{id: k.ID} }
	plain, hashed := Key{ID: "a"}, Key{ID: "b"}.Hashed()
	sa, _ := tb.pin(plain, newSlot)
	sb, _ := tb.pin(hashed, newSlot)
	if s, inserted := tb.pin(plain.Hashed(), newSlot); s != sa || inserted {
		t.Fatal("a hashed key missed the slot its plain twin made")
	}
	if s, inserted := tb.pin(Key{ID: "b"}, newSlot); s != sb || inserted {
		t.Fatal("a plain key missed the slot its hashed twin made")
	}
}
