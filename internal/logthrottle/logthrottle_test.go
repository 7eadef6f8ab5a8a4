package logthrottle

import (
	"sync"
	"testing"
	"time"
)

// TestOneLinePerInterval: within an interval only the first event is let
// through; the next one after it stands for every event held back.
func TestOneLinePerInterval(t *testing.T) {
	var th Throttle
	const every = 10 * time.Second
	t0 := time.Unix(1000, 0)
	if n, ok := th.Take(t0, every); !ok || n != 1 {
		t.Fatalf("first event: %d, %v; want 1, true", n, ok)
	}
	for i := range 5 {
		if _, ok := th.Take(t0.Add(time.Duration(i)*time.Second), every); ok {
			t.Fatalf("event %d within the interval was let through", i)
		}
	}
	if n, ok := th.Take(t0.Add(10*time.Second), every); !ok || n != 6 {
		t.Fatalf("after the interval: %d, %v; want 6 (5 held back and itself), true", n, ok)
	}
}

// TestConcurrentTakesLetOneThrough: racing events at one instant give one
// line, and no event is lost from the counts.
func TestConcurrentTakesLetOneThrough(t *testing.T) {
	var th Throttle
	const every = time.Minute
	t0 := time.Unix(1000, 0)
	var wg sync.WaitGroup
	var mu sync.Mutex
	lines := 0
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, ok := th.Take(t0, every); ok {
				mu.Lock()
				lines++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if lines != 1 {
		t.Fatalf("%d lines for 64 racing events, want 1", lines)
	}
	if n, ok := th.Take(t0.Add(time.Minute), every); !ok || n != 64 {
		t.Fatalf("next line stands for %d events, want 64 (63 held back and itself)", n)
	}
}
