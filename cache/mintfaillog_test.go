package cache

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// TestIdPOutageLogsOneLinePerInterval: when the IdP fails every key at once
// (an outage under 100k broker clients), the cache logs one "mint failed"
// line per interval, counting the failures it stands for, not one per key.
// A single failing credential, retrying no sooner than its back-off, still
// logs each attempt.
func TestIdPOutageLogsOneLinePerInterval(t *testing.T) {
	clk := newClock()
	core, logs := observer.New(zap.WarnLevel)
	tokens, err := New(Options{Now: clk.Now, Logger: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	defer tokens.Close()
	src := &source{clock: clk, lifetime: time.Hour}
	src.fail(errors.New("idp down"))
	const keys = 500
	get := func(i int) {
		k := Key{ID: fmt.Sprintf("id-%d", i), Name: fmt.Sprintf("client-%d", i)}
		if _, err := tokens.Get(context.Background(), k, src); err == nil {
			t.Fatal("a failing IdP gave a token")
		}
	}
	for i := range keys {
		get(i)
	}
	if got := src.calls.Load(); got != keys {
		t.Fatalf("%d mints asked, want %d (one per key)", got, keys)
	}
	lines := logs.FilterMessage("mint failed").All()
	if len(lines) != 1 {
		t.Fatalf("%d log lines for %d failed mints in one instant, want 1", len(lines), keys)
	}
	clk.Advance(mintFailLogEvery)
	get(keys) // a new key, so no back-off stands in its way
	lines = logs.FilterMessage("mint failed").All()
	if len(lines) != 2 {
		t.Fatalf("%d log lines after the interval, want 2", len(lines))
	}
	if n := lines[1].ContextMap()["failed_mints"]; n != int64(keys) {
		t.Fatalf("second line stands for %v failed mints, want %d (the %d held back and itself)", n, keys, keys-1)
	}
	// One credential alone: every retry after its back-off is logged.
	clk.Advance(time.Hour)
	for range 3 {
		get(0)
		clk.Advance(time.Hour) // past any back-off
	}
	if got := len(logs.FilterMessage("mint failed").All()); got != 5 {
		t.Fatalf("%d lines after 3 spaced retries of one key, want 5", got)
	}
}
