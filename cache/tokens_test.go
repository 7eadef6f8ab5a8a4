package cache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tokenbroker/tokenbroker/credential"
	"github.com/tokenbroker/tokenbroker/internal/testclock"
)

// clock is the shared manual clock for the clock seams.
type clock = testclock.Clock

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newClock() *clock { return testclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)) }

// source is a scripted token source: it counts calls, can block until
// released, and returns err when set.
type source struct {
	clock    *clock
	lifetime time.Duration
	calls    atomic.Int64
	gate     chan struct{} // when non-nil, Token waits for it to close
	started  chan struct{} // when non-nil, receives one value per call
	mu       sync.Mutex
	err      error
}

func (s *source) Token(ctx context.Context) (credential.Token, error) {
	n := s.calls.Add(1)
	if s.started != nil {
		s.started <- struct{}{}
	}
	if s.gate != nil {
		select {
		case <-s.gate:
		case <-ctx.Done():
			return credential.Token{}, ctx.Err()
		}
	}
	s.mu.Lock()
	err := s.err
	s.mu.Unlock()
	if err != nil {
		return credential.Token{}, err
	}
	now := s.clock.Now()
	return credential.Token{Value: fmt.Sprintf("token-%d", n), Type: "Bearer", Issued: now, Expiry: now.Add(s.lifetime)}, nil
}

func (s *source) fail(err error) {
	s.mu.Lock()
	s.err = err
	s.mu.Unlock()
}

func newTokens(t *testing.T, c *clock, margin time.Duration) *Tokens {
	t.Helper()
	tk, err := New(Options{ExpiryMargin: margin, RefreshAhead: 0.2, Now: c.Now, MaxTokens: 1000})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tk.Close)
	return tk
}

var key = Key{ID: "id-billing", Name: "billing"}

func TestConcurrentColdGetsMintOnce(t *testing.T) {
	c := newClock()
	tk := newTokens(t, c, 30*time.Second)
	src := &source{clock: c, lifetime: time.Hour, gate: make(chan struct{})}

	const n = 1000
	var wg sync.WaitGroup
	var ready sync.WaitGroup
	ready.Add(n)
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ready.Done()
			tok, err := tk.Get(context.Background(), key, src)
			if err == nil && tok.Value != "token-1" {
				err = fmt.Errorf("got %q", tok.Value)
			}
			errs <- err
		}()
	}
	ready.Wait()
	close(src.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := src.calls.Load(); got != 1 {
		t.Fatalf("mints = %d, want 1", got)
	}
}

func TestExpiryMarginNeverHandsOutLateToken(t *testing.T) {
	c := newClock()
	tk := newTokens(t, c, 30*time.Second)
	src := &source{clock: c, lifetime: 10 * time.Minute}
	get := func() string {
		t.Helper()
		tok, err := tk.Get(context.Background(), key, src)
		if err != nil {
			t.Fatal(err)
		}
		if !c.Now().Before(tok.Expiry.Add(-30 * time.Second)) {
			t.Fatalf("token handed out within the margin: now %v expiry %v", c.Now(), tok.Expiry)
		}
		return tok.Value
	}
	if v := get(); v != "token-1" {
		t.Fatalf("first = %s", v)
	}
	tk.Settle()
	c.Advance(10*time.Minute - 30*time.Second) // exactly at the margin: unusable
	if v := get(); v != "token-2" {
		t.Fatalf("at margin = %s, want a fresh token", v)
	}
}

func TestRefreshAheadServesCurrentTokenWhileRefreshing(t *testing.T) {
	c := newClock()
	tk := newTokens(t, c, 0)
	src := &source{clock: c, lifetime: 100 * time.Second}
	if _, err := tk.Get(context.Background(), key, src); err != nil {
		t.Fatal(err)
	}
	tk.Settle()

	// Past 80% of the lifetime: the next Get triggers one background refresh,
	// which blocks inside the IdP until released — yet Get returns at once.
	src.gate = make(chan struct{})
	src.started = make(chan struct{}, 10)
	c.Advance(81 * time.Second)
	for range 50 {
		tok, err := tk.Get(context.Background(), key, src)
		if err != nil || tok.Value != "token-1" {
			t.Fatalf("during refresh: %q, %v", tok.Value, err)
		}
	}
	<-src.started // the refresh reached the IdP
	close(src.gate)
	tk.Settle()
	tok, err := tk.Get(context.Background(), key, src)
	if err != nil || tok.Value != "token-2" {
		t.Fatalf("after refresh: %q, %v", tok.Value, err)
	}
	if got := src.calls.Load(); got != 2 {
		t.Fatalf("mints = %d, want 2", got)
	}
}

func TestIdPDownServesValidTokenThenRefuses(t *testing.T) {
	c := newClock()
	tk := newTokens(t, c, 10*time.Second)
	src := &source{clock: c, lifetime: 100 * time.Second}
	if _, err := tk.Get(context.Background(), key, src); err != nil {
		t.Fatal(err)
	}
	tk.Settle()
	src.fail(errors.New("connection refused"))

	// Refresh window: refresh fails in the background, the token is still served.
	c.Advance(80 * time.Second)
	for range 3 {
		tok, err := tk.Get(context.Background(), key, src)
		if err != nil || tok.Value != "token-1" {
			t.Fatalf("valid token not served: %q %v", tok.Value, err)
		}
		tk.Settle()
	}
	// Past expiry − margin: never the old token.
	c.Advance(15 * time.Second)
	_, err := tk.Get(context.Background(), key, src)
	var ue *UnavailableError
	if !errors.As(err, &ue) {
		t.Fatalf("err = %v, want UnavailableError", err)
	}
	// Back-off: repeated requests do not reach the IdP until the retry time.
	before := src.calls.Load()
	for range 100 {
		if _, err := tk.Get(context.Background(), key, src); err == nil {
			t.Fatal("expired token served")
		}
	}
	if got := src.calls.Load(); got != before {
		t.Fatalf("IdP asked %d more times during back-off", got-before)
	}
	// IdP back and back-off over: recovery without restart.
	src.fail(nil)
	c.Advance(2 * time.Minute)
	tok, err := tk.Get(context.Background(), key, src)
	if err != nil || tok.Value == "token-1" {
		t.Fatalf("no recovery: %q %v", tok.Value, err)
	}
}

func TestBackoffBoundsAttemptsPerMinute(t *testing.T) {
	c := newClock()
	tk := newTokens(t, c, 0)
	src := &source{clock: c, lifetime: time.Hour}
	src.fail(errors.New("boom"))
	// Ten simulated minutes of a request every 100 ms.
	for range 6000 {
		_, _ = tk.Get(context.Background(), key, src)
		c.Advance(100 * time.Millisecond)
	}
	// Exponential back-off from 1 s to 1 min: a handful in the first minute,
	// then about one a minute.
	if got := src.calls.Load(); got > 25 {
		t.Fatalf("IdP asked %d times in 10 minutes", got)
	}
	if got := src.calls.Load(); got < 5 {
		t.Fatalf("IdP asked only %d times in 10 minutes: retries stopped", got)
	}
}

func TestRetryAfterHonoured(t *testing.T) {
	c := newClock()
	tk := newTokens(t, c, 0)
	src := &source{clock: c, lifetime: time.Hour}
	src.fail(&credential.IdPError{Status: 429, RetryAfter: 30 * time.Second})
	_, _ = tk.Get(context.Background(), key, src)
	c.Advance(29 * time.Second)
	_, _ = tk.Get(context.Background(), key, src)
	if got := src.calls.Load(); got != 1 {
		t.Fatalf("asked %d times before Retry-After passed", got)
	}
	c.Advance(2 * time.Second)
	_, _ = tk.Get(context.Background(), key, src)
	if got := src.calls.Load(); got != 2 {
		t.Fatalf("asked %d times after Retry-After, want 2", got)
	}
}

func TestTokenShorterThanMarginIsAFailureNotAStorm(t *testing.T) {
	c := newClock()
	tk := newTokens(t, c, 30*time.Second)
	src := &source{clock: c, lifetime: time.Second}
	for range 100 {
		if _, err := tk.Get(context.Background(), key, src); err == nil {
			t.Fatal("token shorter than the margin handed out")
		}
	}
	if got := src.calls.Load(); got != 1 {
		t.Fatalf("mints = %d, want 1 then back-off", got)
	}
}

func TestInvalidateMintsAgain(t *testing.T) {
	c := newClock()
	tk := newTokens(t, c, 0)
	src := &source{clock: c, lifetime: time.Hour}
	_, _ = tk.Get(context.Background(), key, src)
	tk.Settle()
	tk.Invalidate(key)
	tk.Settle()
	tok, err := tk.Get(context.Background(), key, src)
	if err != nil || tok.Value != "token-2" {
		t.Fatalf("%q %v", tok.Value, err)
	}
}

func TestCallerContextDoesNotCancelSharedMint(t *testing.T) {
	c := newClock()
	tk := newTokens(t, c, 0)
	src := &source{clock: c, lifetime: time.Hour, gate: make(chan struct{}), started: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := tk.Get(ctx, key, src)
		errc <- err
	}()
	<-src.started
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("impatient caller: %v", err)
	}
	// The mint continues for everyone else.
	done := make(chan error, 1)
	go func() {
		_, err := tk.Get(context.Background(), key, src)
		done <- err
	}()
	close(src.gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := src.calls.Load(); got != 1 {
		t.Fatalf("mints = %d, want 1", got)
	}
}

func BenchmarkGetHit(b *testing.B) {
	c := newClock()
	tk, _ := New(Options{Now: c.Now})
	defer tk.Close()
	src := &source{clock: c, lifetime: time.Hour}
	_, _ = tk.Get(context.Background(), key, src)
	tk.Settle()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := tk.Get(context.Background(), key, src); err != nil {
			b.Fatal(err)
		}
	}
}
