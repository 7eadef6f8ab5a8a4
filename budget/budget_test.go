package budget

import (
	"errors"
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
