package cache

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

func TestLeaseColdSharesOneMintAndReportsDeadlines(t *testing.T) {
	c := newClock()
	tk := newTokens(t, c, 30*time.Second)
	src := &source{clock: c, lifetime: time.Hour, gate: make(chan struct{})}
	var wg sync.WaitGroup
	leases := make([]Lease, 100)
	for i := range leases {
		wg.Go(func() {
			l, err := tk.Lease(context.Background(), key, src, false)
			if err != nil {
				t.Error(err)
			}
			leases[i] = l
		})
	}
	close(src.gate)
	wg.Wait()
	if got := src.calls.Load(); got != 1 {
		t.Fatalf("100 cold leases: %d mints, want 1", got)
	}
	now := c.Now()
	l := leases[0]
	// One hour, 30 s margin, refresh_ahead 0.2 of the usable 59m30s.
	if want := now.Add(time.Hour - 30*time.Second); !l.Until.Equal(want) {
		t.Fatalf("Until = %v, want %v", l.Until, want)
	}
	if want := now.Add(time.Duration(float64(time.Hour-30*time.Second) * 0.8)); l.RefreshAt.Sub(want).Abs() > time.Millisecond {
		t.Fatalf("RefreshAt = %v, want %v", l.RefreshAt, want)
	}
	for _, o := range leases {
		if o.Token.Value != l.Token.Value {
			t.Fatal("leases disagree")
		}
	}
	// A Get now is a hit on the same token: Lease filled the cache.
	tk.Settle()
	if tok, err := tk.Get(context.Background(), key, src); err != nil || tok.Value != l.Token.Value || src.calls.Load() != 1 {
		t.Fatalf("Get after Lease: %v %v, %d mints", tok.Value, err, src.calls.Load())
	}
}

func TestLeaseFreshReplacesOnlyWhenDue(t *testing.T) {
	c := newClock()
	tk := newTokens(t, c, 30*time.Second)
	src := &source{clock: c, lifetime: time.Hour}
	first, err := tk.Lease(context.Background(), key, src, true)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := tk.Lease(context.Background(), key, src, true); again.Token.Value != first.Token.Value || src.calls.Load() != 1 {
		t.Fatalf("fresh lease before the refresh point minted: %d mints", src.calls.Load())
	}
	c.Advance(first.RefreshAt.Sub(c.Now()))
	// Not fresh: the due token is still usable and is returned as it is.
	if l, _ := tk.Lease(context.Background(), key, src, false); l.Token.Value != first.Token.Value || src.calls.Load() != 1 {
		t.Fatal("non-fresh lease replaced a usable token")
	}
	next, err := tk.Lease(context.Background(), key, src, true)
	if err != nil || next.Token.Value == first.Token.Value || src.calls.Load() != 2 {
		t.Fatalf("fresh lease at the refresh point: %v %v, %d mints", next.Token.Value, err, src.calls.Load())
	}
	if !next.RefreshAt.After(c.Now()) {
		t.Fatal("a new lease is already due")
	}
}

func TestLeaseTakesATokenABackgroundRefreshAlreadyGot(t *testing.T) {
	c := newClock()
	tk := newTokens(t, c, 30*time.Second)
	src := &source{clock: c, lifetime: time.Hour}
	first, _ := tk.Lease(context.Background(), key, src, false)
	tk.Settle()
	c.Advance(first.RefreshAt.Sub(c.Now()))
	if _, err := tk.Get(context.Background(), key, src); err != nil { // starts the background refresh
		t.Fatal(err)
	}
	tk.Settle()
	if src.calls.Load() != 2 {
		t.Fatalf("background refresh: %d mints", src.calls.Load())
	}
	l, err := tk.Lease(context.Background(), key, src, true)
	if err != nil || l.Token.Value != "token-2" || src.calls.Load() != 2 {
		t.Fatalf("lease after a background refresh: %q %v, %d mints, want token-2 without a mint", l.Token.Value, err, src.calls.Load())
	}
}

func TestLeaseFailureCarriesRetryTimeAndHonoursBackoff(t *testing.T) {
	c := newClock()
	tk := newTokens(t, c, 30*time.Second)
	src := &source{clock: c, lifetime: time.Hour}
	src.fail(errors.New("idp down"))
	_, err := tk.Lease(context.Background(), key, src, true)
	ue, ok := errors.AsType[*UnavailableError](err)
	if !ok || !ue.RetryAt.After(c.Now()) {
		t.Fatalf("err = %v, want an UnavailableError with a retry time", err)
	}
	if _, err := tk.Lease(context.Background(), key, src, true); !errors.Is(err, ErrBackoff) || src.calls.Load() != 1 {
		t.Fatalf("second lease during back-off: %v, %d IdP calls, want ErrBackoff and 1", err, src.calls.Load())
	}
	src.fail(nil)
	c.Advance(ue.RetryAt.Sub(c.Now()))
	if l, err := tk.Lease(context.Background(), key, src, true); err != nil || l.Token.Value == "" {
		t.Fatalf("after the retry time: %v", err)
	}
}

func TestLeaseWaitingHonoursContext(t *testing.T) {
	c := newClock()
	tk := newTokens(t, c, 30*time.Second)
	src := &source{clock: c, lifetime: time.Hour, gate: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := tk.Lease(ctx, key, src, false); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	close(src.gate)
	tk.Settle()
}

func TestLeaseThroughFleetMintsOnceAtRefresh(t *testing.T) {
	f := newFleet(t, 3)
	first, err := f.caches[0].Lease(context.Background(), key, f.src, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, tk := range f.caches[1:] {
		if l, err := tk.Lease(context.Background(), key, f.src, false); err != nil || l.Token.Value != first.Token.Value {
			t.Fatalf("cold lease on another replica: %v %v", l.Token.Value, err)
		}
	}
	if f.src.calls.Load() != 1 {
		t.Fatalf("cold: %d mints, want 1", f.src.calls.Load())
	}
	// Every replica's timer fires at the same refresh point.
	f.clock.Advance(first.RefreshAt.Sub(f.clock.Now()))
	var wg sync.WaitGroup
	values := make([]string, len(f.caches))
	for i, tk := range f.caches {
		wg.Go(func() {
			l, err := tk.Lease(context.Background(), key, f.src, true)
			if err != nil {
				t.Error(err)
			}
			values[i] = l.Token.Value
		})
	}
	wg.Wait()
	if f.src.calls.Load() != 2 || values[0] != values[1] || values[1] != values[2] || values[0] == first.Token.Value {
		t.Fatalf("fleet refresh: %d mints, values %v; want 2 mints and one new value", f.src.calls.Load(), values)
	}
}

func TestCredentialLabelSharesTheBound(t *testing.T) {
	c := newClock()
	tk := newTokens(t, c, time.Second)
	if got := tk.CredentialLabel("billing"); got != "billing" {
		t.Fatalf("label %q", got)
	}
}
