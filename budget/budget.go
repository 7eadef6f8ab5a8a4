// Package budget counts mints in rolling windows, warns as a budget fills
// and, when asked to, refuses mints past it.
//
// Counts live behind the small Counter interface: Memory keeps them in this
// process; a Redis sorted set (ZADD at, ZREMRANGEBYSCORE older than the
// window, ZCOUNT since) fits the same two methods so a fleet can share them.
package budget

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/tokenbroker/tokenbroker/internal/credlabel"
)

// Counter records mints per name and counts them over a time range.
// Implementations must be safe for concurrent use.
type Counter interface {
	Add(ctx context.Context, name string, at time.Time) error
	Count(ctx context.Context, name string, since, until time.Time) (int64, error)
}

// Keep is how far back Memory remembers mints: the status page's 30 days.
const Keep = 30 * 24 * time.Hour

// Memory is the in-process Counter. It remembers each mint's instant for
// Keep (or the longest window asked for, if longer).
//
// It holds a name for every broker client that minted, so it is kept lean:
// instants are Unix nanoseconds, a name with a single mint kept (most of
// them: one token per lifetime) is one map entry with no slice, and names
// whose mints have all aged out are swept away.
type Memory struct {
	mu   sync.Mutex         // guards the fields below
	one  map[string]int64   // names with one mint kept: its instant
	many map[string][]int64 // names with more: their instants, nearly in order
	keep time.Duration
	adds int // since the last sweep
}

// NewMemory returns an empty in-process counter.
func NewMemory() *Memory {
	return &Memory{one: make(map[string]int64), many: make(map[string][]int64), keep: Keep}
}

// Add records a mint for name at at.
func (m *Memory) Add(_ context.Context, name string, at time.Time) error {
	t := at.UnixNano()
	m.mu.Lock()
	defer m.mu.Unlock()
	cut := t - int64(m.keep) // what no window can see any more: at or before cut
	if s, ok := m.many[name]; ok {
		s = append(s, t)
		// Stamps arrive nearly in order.
		s = s[sort.Search(len(s), func(i int) bool { return s[i] > cut }):]
		if len(s) == 1 {
			delete(m.many, name)
			m.one[name] = s[0]
		} else {
			m.many[name] = s
		}
	} else if o, ok := m.one[name]; ok && o > cut {
		delete(m.one, name)
		m.many[name] = []int64{o, t}
	} else {
		m.one[name] = t
	}
	if m.adds++; 2*m.adds > len(m.one)+len(m.many) {
		m.sweepLocked(cut)
	}
	return nil
}

// sweepLocked forgets the names with no mint after cut. It runs once per
// half as many Adds as there are names, so it costs O(1) per Add, and stale
// names go even while every Add brings a new one.
func (m *Memory) sweepLocked(cut int64) {
	m.adds = 0
	for name, t := range m.one {
		if t <= cut {
			delete(m.one, name)
		}
	}
	for name, s := range m.many {
		if slices.Max(s) <= cut {
			delete(m.many, name)
		}
	}
}

// Count returns the mints for name in (since, until].
func (m *Memory) Count(_ context.Context, name string, since, until time.Time) (int64, error) {
	lo, hi := since.UnixNano(), until.UnixNano()
	m.mu.Lock()
	defer m.mu.Unlock()
	if until.Sub(since) > m.keep {
		m.keep = until.Sub(since)
	}
	in := func(t int64) bool { return t > lo && t <= hi }
	if t, ok := m.one[name]; ok {
		if in(t) {
			return 1, nil
		}
		return 0, nil
	}
	var n int64
	for _, t := range m.many[name] {
		if in(t) {
			n++
		}
	}
	return n, nil
}

// Policy is one name's budget; Limit 0 means count but never warn or refuse.
type Policy struct {
	Limit       int64
	Window      time.Duration
	Enforce     bool
	CostPerMint float64 // dollars
	// Label names the series in metrics: the credential name, or for broker
	// clients the upstream, so client ids never become label values.
	Label string
}

// ExceededError refuses a mint because an enforced budget is used up.
type ExceededError struct {
	Name    string
	Limit   int64
	Window  time.Duration
	RetryAt time.Time // when the oldest counted mint leaves the window (approximately)
}

func (e *ExceededError) Error() string {
	return fmt.Sprintf("mint budget of %d per %s used up for %q", e.Limit, e.Window, e.Name)
}

// Usage is a name's mint counts as seen now.
type Usage struct {
	Hour, Day, Month int64
	Used             int64 // in the budget window
	Policy           Policy
}

// Meter applies policies to a Counter.
type Meter struct {
	counter Counter
	now     func() time.Time
	log     *zap.Logger

	warnings *credlabel.CounterVec
	spent    *credlabel.CounterVec

	mu       sync.Mutex // guards policies and level
	policies map[string]Policy
	level    map[string]int // 0, 80 or 100: the last warning logged for the current fill
}

// NewMeter counts with c (nil: NewMemory()), reads time from now (nil:
// time.Now), logs to log and registers its metrics with reg (nil: not registered).
func NewMeter(c Counter, now func() time.Time, log *zap.Logger, reg prometheus.Registerer) *Meter {
	if c == nil {
		c = NewMemory()
	}
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = zap.NewNop()
	}
	lim := credlabel.For(reg) // the label bound shared with the cache's families
	m := &Meter{
		counter: c, now: now, log: log,
		policies: make(map[string]Policy), level: make(map[string]int),
		warnings: credlabel.NewCounterVec(lim, prometheus.CounterOpts{
			Name: "tokenbroker_budget_warnings_total",
			Help: "Mint budgets crossing 80% or 100% of their limit, by credential (or broker upstream) and level.",
		}, []string{"credential", "level"}),
		spent: credlabel.NewCounterVec(lim, prometheus.CounterOpts{
			Name: "tokenbroker_cost_spent_dollars_total",
			Help: "Estimated dollars spent on token mints (cost_per_mint × mints), by credential or broker upstream.",
		}, []string{"credential"}),
	}
	if reg != nil {
		reg.MustRegister(m.warnings, m.spent)
	}
	return m
}

// Set gives name a policy. A name without one is counted with no limit.
// A policy with neither a limit nor a price acts as none, so it is not
// kept (100k configured credentials without budgets would otherwise hold
// ~90 B each) and replaces one set before.
func (m *Meter) Set(name string, p Policy) {
	if p.Window <= 0 {
		p.Window = 720 * time.Hour
	}
	if p.Label == "" {
		p.Label = name
	}
	m.mu.Lock()
	if p.Limit == 0 && p.CostPerMint == 0 {
		delete(m.policies, name)
	} else {
		m.policies[name] = p
	}
	m.mu.Unlock()
}

// Policy returns name's policy and whether it has one.
func (m *Meter) Policy(name string) (Policy, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.policies[name]
	return p, ok
}

// Check reports, without counting, whether Take would allow a mint now.
func (m *Meter) Check(name string) error {
	p, _ := m.Policy(name)
	if p.Limit == 0 || !p.Enforce {
		return nil
	}
	ctx, now := context.Background(), m.now()
	used, err := m.counter.Count(ctx, name, now.Add(-p.Window), now)
	if err != nil || used < p.Limit {
		return nil
	}
	return &ExceededError{Name: name, Limit: p.Limit, Window: p.Window, RetryAt: m.retryAt(ctx, name, p, now)}
}

// Take asks to mint once for name: with an enforced budget used up it
// returns an *ExceededError; otherwise it counts the mint, logs a warning
// when the budget crosses 80% or 100%, and returns nil. A counter that
// fails does not stop minting (an outage of the count store must not
// become an outage of tokens); it is logged.
func (m *Meter) Take(name string) error {
	ctx := context.Background()
	now := m.now()
	p, _ := m.Policy(name)
	if p.Limit > 0 && p.Enforce {
		used, err := m.counter.Count(ctx, name, now.Add(-p.Window), now)
		if err != nil {
			m.log.Warn("budget count failed; allowing the mint", zap.String("name", name), zap.Error(err))
		} else if used >= p.Limit {
			m.warn(name, p, used)
			return &ExceededError{Name: name, Limit: p.Limit, Window: p.Window, RetryAt: m.retryAt(ctx, name, p, now)}
		}
	}
	if err := m.counter.Add(ctx, name, now); err != nil {
		m.log.Warn("budget count failed", zap.String("name", name), zap.Error(err))
	}
	if p.CostPerMint > 0 {
		m.spent.WithLabelValues(labelOf(name, p)).Add(p.CostPerMint)
	}
	if p.Limit > 0 {
		if used, err := m.counter.Count(ctx, name, now.Add(-p.Window), now); err == nil {
			m.warn(name, p, used)
		}
	}
	return nil
}

// retryAt estimates when a slot frees up: bisect for the instant the count
// in the window first drops below the limit.
func (m *Meter) retryAt(ctx context.Context, name string, p Policy, now time.Time) time.Time {
	lo, hi := time.Duration(0), p.Window
	for hi-lo > time.Second {
		mid := lo + (hi-lo)/2
		n, err := m.counter.Count(ctx, name, now.Add(mid-p.Window), now)
		if err != nil {
			return now.Add(p.Window)
		}
		if n >= p.Limit {
			lo = mid
		} else {
			hi = mid
		}
	}
	return now.Add(hi)
}

func (m *Meter) warn(name string, p Policy, used int64) {
	lvl := 0
	switch {
	case used >= p.Limit:
		lvl = 100
	case used*5 >= p.Limit*4:
		lvl = 80
	}
	m.mu.Lock()
	prev := m.level[name]
	m.level[name] = lvl
	m.mu.Unlock()
	if lvl <= prev {
		return
	}
	m.warnings.WithLabelValues(labelOf(name, p), fmt.Sprint(lvl)).Inc()
	msg := "mint budget 80% used"
	if lvl == 100 {
		msg = "mint budget used up"
	}
	m.log.Warn(msg,
		zap.String("name", name),
		zap.Int64("mints", used),
		zap.Int64("limit", p.Limit),
		zap.Duration("window", p.Window),
		zap.Bool("enforce", p.Enforce))
}

func labelOf(name string, p Policy) string {
	if p.Label != "" {
		return p.Label
	}
	return name
}

// Usage counts name's mints over the last hour, day, 30 days and its window.
func (m *Meter) Usage(name string) Usage {
	ctx, now := context.Background(), m.now()
	p, _ := m.Policy(name)
	count := func(d time.Duration) int64 {
		n, _ := m.counter.Count(ctx, name, now.Add(-d), now)
		return n
	}
	u := Usage{Hour: count(time.Hour), Day: count(24 * time.Hour), Month: count(Keep), Policy: p}
	u.Used = count(p.Window)
	return u
}

// Tiered counts in a store shared by the fleet (Redis) and in memory. It
// answers from the shared store and, while that fails, from memory, so an
// outage of the shared store degrades budgets to per-replica counting
// instead of to no counting at all.
type Tiered struct {
	Shared Counter
	Local  Counter
}

// Add records in both stores; only a failure of both is an error.
func (t Tiered) Add(ctx context.Context, name string, at time.Time) error {
	errL := t.Local.Add(ctx, name, at)
	if err := t.Shared.Add(ctx, name, at); err != nil {
		return errL
	}
	return nil
}

// Count prefers the shared count and falls back to the local one.
func (t Tiered) Count(ctx context.Context, name string, since, until time.Time) (int64, error) {
	if n, err := t.Shared.Count(ctx, name, since, until); err == nil {
		return n, nil
	}
	return t.Local.Count(ctx, name, since, until)
}
