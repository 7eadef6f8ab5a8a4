package status

import (
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/filter"
)

// Decisions are the filter's Check counters the page reads: cumulative
// counts by credential and outcome, and the recent denials.
type Decisions interface {
	Checks() []filter.CredentialChecks
	Recent() []filter.Denial
}

// Counts are Checks by outcome over a window. Allowed includes Checks
// that matched no route under default_action allow.
type Counts struct {
	Allowed           int64 `json:"allowed"`
	NoRoute           int64 `json:"no_route"`
	UnknownCredential int64 `json:"unknown_credential"`
	SourceNotAllowed  int64 `json:"source_not_allowed"`
	TokenUnavailable  int64 `json:"token_unavailable"`
	Budget            int64 `json:"budget"`
	Malformed         int64 `json:"malformed"`
}

// Total is every Check counted.
func (c Counts) Total() int64 {
	return c.Allowed + c.Denied()
}

// Denied is every denial counted.
func (c Counts) Denied() int64 {
	return c.NoRoute + c.UnknownCredential + c.SourceNotAllowed + c.TokenUnavailable + c.Budget + c.Malformed
}

func countsOf(n *[filter.NumOutcomes]int64) Counts {
	return Counts{
		Allowed:           n[filter.Allowed] + n[filter.PassThrough],
		NoRoute:           n[filter.NoRoute],
		UnknownCredential: n[filter.UnknownCredential],
		SourceNotAllowed:  n[filter.SourceNotAllowed],
		TokenUnavailable:  n[filter.TokenUnavailable],
		Budget:            n[filter.BudgetUsedUp],
		Malformed:         n[filter.Malformed],
	}
}

func (c *Counts) add(o Counts) {
	c.Allowed += o.Allowed
	c.NoRoute += o.NoRoute
	c.UnknownCredential += o.UnknownCredential
	c.SourceNotAllowed += o.SourceNotAllowed
	c.TokenUnavailable += o.TokenUnavailable
	c.Budget += o.Budget
	c.Malformed += o.Malformed
}

// CheckRow is one credential's Checks over the last hour and day.
// Credential "" is Checks that chose no credential (no route, an unknown
// credential, malformed); "_other" is credentials past the series limit.
type CheckRow struct {
	Credential string `json:"credential"`
	Hour       Counts `json:"hour"`
	Day        Counts `json:"day"`
}

// windows turns cumulative counts, read at each Sample, into counts over
// the last hour (minute buckets) and day (hour buckets). It holds one
// window per credential label, which the filter bounds.
type windows struct {
	last  map[string][filter.NumOutcomes]int64 // cumulative counts at the previous Sample
	creds map[string]*checkWindow
}

type checkWindow struct {
	minute   [60][filter.NumOutcomes]int64
	minuteAt [60]int64 // the unix minute each bucket holds
	hour     [24][filter.NumOutcomes]int64
	hourAt   [24]int64
}

// sample adds the Checks made since the previous sample, stamped now.
func (w *windows) sample(now time.Time, cur []filter.CredentialChecks) {
	if w.last == nil {
		w.last, w.creds = map[string][filter.NumOutcomes]int64{}, map[string]*checkWindow{}
	}
	m, h := now.Unix()/60, now.Unix()/3600
	for _, c := range cur {
		prev := w.last[c.Credential]
		w.last[c.Credential] = c.Counts
		win := w.creds[c.Credential]
		if win == nil {
			win = &checkWindow{}
			w.creds[c.Credential] = win
		}
		mi, hi := m%60, h%24
		if win.minuteAt[mi] != m {
			win.minute[mi], win.minuteAt[mi] = [filter.NumOutcomes]int64{}, m
		}
		if win.hourAt[hi] != h {
			win.hour[hi], win.hourAt[hi] = [filter.NumOutcomes]int64{}, h
		}
		for o := range filter.NumOutcomes {
			if d := c.Counts[o] - prev[o]; d > 0 {
				win.minute[mi][o] += d
				win.hour[hi][o] += d
			}
		}
	}
}

// rows returns every credential's counts over the last hour and day.
func (w *windows) rows(now time.Time) []CheckRow {
	m, h := now.Unix()/60, now.Unix()/3600
	out := make([]CheckRow, 0, len(w.creds))
	for name, win := range w.creds {
		var hour, day [filter.NumOutcomes]int64
		for i := range 60 {
			if at := win.minuteAt[i]; at > m-60 && at <= m {
				for o := range filter.NumOutcomes {
					hour[o] += win.minute[i][o]
				}
			}
		}
		for i := range 24 {
			if at := win.hourAt[i]; at > h-24 && at <= h {
				for o := range filter.NumOutcomes {
					day[o] += win.hour[i][o]
				}
			}
		}
		out = append(out, CheckRow{Credential: name, Hour: countsOf(&hour), Day: countsOf(&day)})
	}
	// Credentials by name, then the shared rows: "_other", then no credential.
	rank := func(n string) int {
		switch n {
		case "":
			return 2
		case "_other":
			return 1
		}
		return 0
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].Credential, out[j].Credential
		if rank(a) != rank(b) {
			return rank(a) < rank(b)
		}
		return a < b
	})
	return out
}

// routeIndex lists each credential's routes as the page shows them, sorted
// by credential: 32 bytes a route, and no more unless the route has a path
// prefix or methods (its text is then a string of its own). The
// configuration's own []config.Route (~104 B a route) is not kept.
type routeIndex struct {
	routes []routeText // by credential, then file order
}

type routeText struct{ credential, text string }

func newRouteIndex(routes []config.Route) *routeIndex {
	x := &routeIndex{routes: make([]routeText, len(routes))}
	for i, r := range routes {
		s := r.Host // shared with the configuration's string when that is all there is
		if r.PathPrefix != "" {
			s += r.PathPrefix
		}
		if len(r.Methods) > 0 {
			s += " " + strings.Join(r.Methods, ",")
		}
		x.routes[i] = routeText{credential: r.Credential, text: s}
	}
	slices.SortStableFunc(x.routes, func(a, b routeText) int { return strings.Compare(a.credential, b.credential) })
	return x
}

// of lists credential's routes as host[path_prefix] [methods], in file order.
func (x *routeIndex) of(credential string) []string {
	if x == nil {
		return nil
	}
	i := sort.Search(len(x.routes), func(i int) bool { return x.routes[i].credential >= credential })
	var out []string
	for ; i < len(x.routes) && x.routes[i].credential == credential; i++ {
		out = append(out, x.routes[i].text)
	}
	return out
}
