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

// routeTexts are each credential's routes as the page shows them,
// host[path_prefix] [methods] in file order, aligned with the sorted names
// of the credentials they were built for: 16 bytes a route (the text, a
// slice of the configuration's host string when that is all there is),
// nothing for the credential's name, which the names already hold. The
// configuration's own []config.Route (~104 B a route) is not kept.
type routeTexts struct {
	first []string            // names[i]'s first route; "" for none (nil: no routes set)
	more  map[string][]string // the later routes of credentials with several, by name
}

func routeText(r config.Route) string {
	s := r.Host // shared with the configuration's string when that is all there is
	if r.PathPrefix != "" {
		s += r.PathPrefix
	}
	if len(r.Methods) > 0 {
		s += " " + strings.Join(r.Methods, ",")
	}
	return s
}

// newRouteTexts lists routes by credential, aligned with names (sorted).
// Routes of a credential not in names are left out: the page has no row
// for them.
func newRouteTexts(names []string, routes []config.Route) routeTexts {
	x := routeTexts{first: make([]string, len(names))}
	for _, r := range routes {
		i, ok := slices.BinarySearch(names, r.Credential)
		switch {
		case !ok:
		case x.first[i] == "":
			x.first[i] = routeText(r)
		default:
			if x.more == nil {
				x.more = map[string][]string{}
			}
			x.more[r.Credential] = append(x.more[r.Credential], routeText(r))
		}
	}
	return x
}

// realign keeps the routes of the credentials in both from (the names x
// is aligned with) and to (both sorted), aligned with to.
func (x routeTexts) realign(from, to []string) routeTexts {
	if x.first == nil {
		return routeTexts{}
	}
	out := routeTexts{first: make([]string, len(to))}
	i := 0
	for j, name := range to {
		for i < len(from) && from[i] < name {
			i++
		}
		if i < len(from) && from[i] == name {
			out.first[j] = x.first[i]
		}
	}
	for name, rs := range x.more {
		if _, ok := slices.BinarySearch(to, name); ok {
			if out.more == nil {
				out.more = map[string][]string{}
			}
			out.more[name] = rs
		}
	}
	return out
}

// of lists the routes of the i-th credential of the names x is aligned
// with, in file order; nil for none.
func (x routeTexts) of(i int, name string) []string {
	if i >= len(x.first) || x.first[i] == "" {
		return nil
	}
	return append([]string{x.first[i]}, x.more[name]...)
}
