package budget

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestBudget(t *testing.T) {
	tests := []struct {
		name      string
		policy    Policy
		mints     int           // attempted, one per step
		step      time.Duration // clock advance between attempts
		wantOK    int           // attempts allowed
		wantWarns []string      // levels warned, in order
	}{
		{"no limit counts only", Policy{}, 50, time.Minute, 50, nil},
		{"advisory warns at 80 and 100 but allows", Policy{Limit: 10, Window: time.Hour}, 12, time.Second, 12, []string{"80", "100"}},
		{"enforced stops at the limit", Policy{Limit: 10, Window: time.Hour, Enforce: true}, 15, time.Second, 10, []string{"80", "100"}},
		{"rolling window frees slots", Policy{Limit: 5, Window: 10 * time.Minute, Enforce: true}, 20, time.Minute, 20 / 2, []string{"80", "100"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := &clock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
			core, logs := observer.New(zap.WarnLevel)
			reg := prometheus.NewRegistry()
			m := NewMeter(nil, clk.now, zap.New(core), reg)
			m.Set("billing", tt.policy)
			ok := 0
			for range tt.mints {
				err := m.Take("billing")
				var ex *ExceededError
				switch {
				case err == nil:
					ok++
				case errors.As(err, &ex):
					if !ex.RetryAt.After(clk.t) || ex.RetryAt.After(clk.t.Add(tt.policy.Window)) {
						t.Errorf("RetryAt %s not within the window after %s", ex.RetryAt, clk.t)
					}
				default:
					t.Fatalf("Take: %v", err)
				}
				clk.t = clk.t.Add(tt.step)
			}
			if ok != tt.wantOK {
				t.Errorf("allowed %d mints, want %d", ok, tt.wantOK)
			}
			var levels []string
			for _, e := range logs.All() {
				switch e.Message {
				case "mint budget 80% used":
					levels = append(levels, "80")
				case "mint budget used up":
					levels = append(levels, "100")
				}
			}
			if len(tt.wantWarns) == 0 && len(levels) > 0 || len(tt.wantWarns) > 0 && (len(levels) < 2 || levels[0] != "80" || levels[1] != "100") {
				t.Errorf("warnings %v, want %v first", levels, tt.wantWarns)
			}
			for _, lvl := range tt.wantWarns {
				if got := testutil.ToFloat64(m.warnings.WithLabelValues("billing", lvl)); got < 1 {
					t.Errorf("warning metric at %s%% = %v, want ≥1", lvl, got)
				}
			}
		})
	}
}

func TestUsageWindows(t *testing.T) {
	clk := &clock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	m := NewMeter(nil, clk.now, nil, nil)
	m.Set("c", Policy{Limit: 100, Window: 48 * time.Hour, CostPerMint: 0.001})
	// One mint 40 days ago (forgotten), 20 days ago, 30 hours ago, 2 hours ago, 10 minutes ago.
	for _, ago := range []time.Duration{40 * 24 * time.Hour, 20 * 24 * time.Hour, 30 * time.Hour, 2 * time.Hour, 10 * time.Minute} {
		clk.t = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC).Add(-ago)
		if err := m.Take("c"); err != nil {
			t.Fatal(err)
		}
	}
	clk.t = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	u := m.Usage("c")
	if u.Hour != 1 || u.Day != 2 || u.Month != 4 || u.Used != 3 {
		t.Errorf("usage %+v, want hour 1, day 2, month 4, used 3", u)
	}
	if got := testutil.ToFloat64(m.spent.WithLabelValues("c")); got < 0.0049 || got > 0.0051 {
		t.Errorf("spent $%v, want $0.005", got)
	}
}

func TestCheckDoesNotCount(t *testing.T) {
	clk := &clock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	m := NewMeter(nil, clk.now, nil, nil)
	m.Set("c", Policy{Limit: 1, Window: time.Hour, Enforce: true})
	for range 3 {
		if err := m.Check("c"); err != nil {
			t.Fatalf("Check before any mint: %v", err)
		}
	}
	if err := m.Take("c"); err != nil {
		t.Fatal(err)
	}
	var ex *ExceededError
	if err := m.Check("c"); !errors.As(err, &ex) {
		t.Errorf("Check after the budget is used: %v", err)
	}
}

// TestMemoryCounts: the in-process counter counts mints in (since, until]
// exactly, whether a name holds one mint or many, forgets what no window can
// see, and sweeps names whose mints all aged out without losing live ones.
func TestMemoryCounts(t *testing.T) {
	ctx := t.Context()
	m := NewMemory()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 500, time.UTC)
	count := func(name string, since, until time.Time) int64 {
		t.Helper()
		n, err := m.Count(ctx, name, since, until)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	_ = m.Add(ctx, "a", t0)
	if got := count("a", t0.Add(-time.Nanosecond), t0); got != 1 {
		t.Errorf("one mint, window ending on it: %d, want 1", got)
	}
	if got := count("a", t0, t0.Add(time.Hour)); got != 0 {
		t.Errorf("one mint, window starting on it (exclusive): %d, want 0", got)
	}
	for i := 1; i < 5; i++ {
		_ = m.Add(ctx, "a", t0.Add(time.Duration(i)*time.Minute))
	}
	if got := count("a", t0.Add(-time.Hour), t0.Add(time.Hour)); got != 5 {
		t.Errorf("five mints: %d", got)
	}
	if got := count("a", t0.Add(time.Minute), t0.Add(3*time.Minute)); got != 2 {
		t.Errorf("(1m, 3m]: %d, want 2", got)
	}
	// A mint past Keep after the others drops them: one mint left.
	late := t0.Add(Keep + 10*time.Minute)
	_ = m.Add(ctx, "a", late)
	if got := count("a", late.Add(-Keep), late); got != 1 {
		t.Errorf("after the others aged out: %d, want 1", got)
	}
	if len(m.many) != 0 || len(m.one) != 1 {
		t.Errorf("one mint kept is stored as a single instant: %d many, %d one", len(m.many), len(m.one))
	}
	// Many names minting once each, long after "b" did: the sweep forgets
	// "b" (nothing left to count) and keeps the recent ones.
	_ = m.Add(ctx, "b", t0)
	for i := range 100 {
		_ = m.Add(ctx, fmt.Sprintf("n%d", i), late)
	}
	if _, ok := m.one["b"]; ok {
		t.Error("a name whose mints all aged out was not swept")
	}
	if got := count("n7", late.Add(-time.Hour), late); got != 1 {
		t.Errorf("a recent name after the sweep: %d, want 1", got)
	}
	if got := count("a", late.Add(-time.Hour), late); got != 1 {
		t.Errorf("a's last mint after the sweep: %d, want 1", got)
	}
}

// A policy that says nothing is not kept, and it replaces one that did: a
// reload that removes a credential's budget leaves it unlimited.
func TestSetForgetsEmptyPolicy(t *testing.T) {
	m := NewMeter(nil, nil, nil, nil)
	m.Set("a", Policy{})
	if _, ok := m.Policy("a"); ok {
		t.Fatal("an empty policy was kept")
	}
	m.Set("a", Policy{Limit: 1, Enforce: true})
	if err := m.Take("a"); err != nil {
		t.Fatalf("first mint: %v", err)
	}
	if err := m.Take("a"); err == nil {
		t.Fatal("second mint allowed past an enforced limit of 1")
	}
	m.Set("a", Policy{})
	if _, ok := m.Policy("a"); ok {
		t.Fatal("the removed budget is still kept")
	}
	if err := m.Take("a"); err != nil {
		t.Fatalf("mint after the budget was removed: %v", err)
	}
	if u := m.Usage("a"); u.Month != 2 { // the refused mint is not counted
		t.Fatalf("mints counted without a policy: %d, want 2", u.Month)
	}
}
