package status

import (
	"fmt"
	"html/template"
	"math"
	"net/http"
	"sort"
	"strings"
	"time"
)

func sortRows(rows []Row) {
	sort.Slice(rows, func(i, j int) bool {
		if rows[i].Kind != rows[j].Kind {
			return rows[i].Kind == "credential"
		}
		if rows[i].Upstream != rows[j].Upstream {
			return rows[i].Upstream < rows[j].Upstream
		}
		return rows[i].Name < rows[j].Name
	})
}

// ServeHTML serves /status.
func (p *Page) ServeHTML(w http.ResponseWriter, r *http.Request) {
	d := p.DataPage(pageOf(r))
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	// Inline style and script only; nothing is fetched from anywhere.
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:")
	_ = page.Execute(w, view{Data: d, Refresh: int(p.refresh.Seconds()), Chart: chart(d.Samples, d.Now)})
}

type view struct {
	Data
	Refresh int
	Chart   template.HTML
}

var funcs = template.FuncMap{
	"add": func(a, b int) int { return a + b },
	"dollars": func(f float64) string {
		if f < 10 {
			return fmt.Sprintf("$%.3f", f)
		}
		return fmt.Sprintf("$%.2f", f)
	},
	"pct": func(f float64) string { return fmt.Sprintf("%.0f%%", 100*f) },
	"width": func(f float64) template.CSS {
		return template.CSS(fmt.Sprintf("width:%.1f%%", math.Max(0, math.Min(100, f))))
	},
	"ago": func(t, now time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return short(now.Sub(t)) + " ago"
	},
	"left": func(sec float64) string {
		if sec <= 0 {
			return "expired"
		}
		return short(time.Duration(sec * float64(time.Second)))
	},
	"unix": func(t time.Time) int64 { return t.UnixMilli() },
	"barclass": func(r Row) string {
		switch {
		case r.BudgetPercent >= 100:
			return "bar full"
		case r.BudgetPercent >= 80:
			return "bar warn"
		}
		return "bar"
	},
	"kind": func(k string) string { return strings.ReplaceAll(k, "_", " ") },
	"credlabel": func(c string) string {
		switch c {
		case "":
			return "no credential"
		case "_other":
			return "other credentials"
		}
		return c
	},
	"transport": func(t string) string {
		switch t {
		case "grpc":
			return "gRPC"
		case "http":
			return "HTTP"
		}
		return t
	},
	"hd": func(h, d int64) template.HTML {
		if h == 0 && d == 0 {
			return `<span class="dim">0</span>`
		}
		return template.HTML(fmt.Sprintf(`%d <span class="dim">/ %d</span>`, h, d))
	},
	"clock": func(t time.Time) string { return t.UTC().Format("15:04:05") },
}

func short(d time.Duration) string {
	switch {
	case d > 0 && d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm %02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh %02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

// chart draws Checks per interval as bars and mints and failed mints as
// distinct marks, on a time axis that spans History intervals ending now and
// a labelled value axis. Each sample is drawn at its own time, so a page
// with two samples shows two bars at the right, not a line across the width.
func chart(samples []Sample, now time.Time) template.HTML {
	const (
		w, h                     = 1160.0, 230.0
		left, right, top, bottom = 56.0, 56.0, 12.0, 40.0
		pw, ph                   = w - left - right, h - top - bottom
	)
	every := 10 * time.Second // the server's sampling interval, read from the samples when it can be
	if n := len(samples); n >= 2 {
		if d := samples[n-1].At.Sub(samples[0].At) / time.Duration(n-1); d >= time.Second {
			every = d.Round(time.Second)
		} else if d > 0 {
			every = max(time.Millisecond, d.Round(10*time.Millisecond))
		}
	}
	span := every * History
	start := now.Add(-span)
	x := func(t time.Time) float64 { return left + pw*float64(t.Sub(start))/float64(span) }
	var maxC, maxM int64 = 1, 1
	for _, s := range samples {
		maxC, maxM = max(maxC, s.Checks), max(maxM, s.Mints, s.Failed)
	}
	topC, topM := niceCeil(maxC), niceCeil(maxM)
	yC := func(v int64) float64 { return top + ph - ph*float64(v)/float64(topC) }
	yM := func(v int64) float64 { return top + ph - ph*float64(v)/float64(topM) }

	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" viewBox="0 0 %.0f %.0f" role="img" aria-label="Checks, mints and failed mints per %s over the last %s">`, w, h, short(every), short(span))
	// Value axes: Checks on the left, mints on the right; a grid line per tick.
	for i := 0; i <= 4; i++ {
		y := top + ph - ph*float64(i)/4
		fmt.Fprintf(&b, `<line x1="%.0f" x2="%.0f" y1="%.1f" y2="%.1f" class="grid"/>`, left, left+pw, y, y)
		fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" class="tick yl">%d</text>`, left-6, y+4, topC*int64(i)/4)
		fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" class="tick yr">%d</text>`, left+pw+6, y+4, topM*int64(i)/4)
	}
	fmt.Fprintf(&b, `<text x="12" y="%.0f" class="axis" transform="rotate(-90 12 %.0f)">Checks / %s</text>`, top+ph/2, top+ph/2, short(every))
	fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" class="axis" transform="rotate(90 %.0f %.0f)">mints / %s</text>`, w-10, top+ph/2, w-10, top+ph/2, short(every))
	// Time axis: five labelled ticks, UTC.
	fmt.Fprintf(&b, `<line x1="%.0f" x2="%.0f" y1="%.0f" y2="%.0f" class="axisline"/>`, left, left+pw, top+ph, top+ph)
	for i := 0; i <= 4; i++ {
		t := start.Add(span * time.Duration(i) / 4)
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.0f" y2="%.0f" class="axisline"/><text x="%.1f" y="%.0f" class="tick x">%s</text>`,
			x(t), x(t), top+ph, top+ph+4, x(t), top+ph+17, t.UTC().Format("15:04:05"))
	}
	fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" class="axis x">time (UTC)</text>`, left+pw/2, h-4)
	bw := max(1, pw/History-1)
	for _, s := range samples {
		if s.At.Before(start) {
			continue
		}
		xe := x(s.At) // a sample covers the interval ending at its time
		fmt.Fprintf(&b, `<rect class="checks" x="%.1f" y="%.1f" width="%.1f" height="%.1f"><title>%s: %d Checks</title></rect>`,
			xe-bw, yC(s.Checks), bw, top+ph-yC(s.Checks), s.At.UTC().Format("15:04:05"), s.Checks)
		if s.Mints > 0 {
			fmt.Fprintf(&b, `<circle class="mint" cx="%.1f" cy="%.1f" r="4"><title>%s: %d mints</title></circle>`, xe-bw/2, yM(s.Mints), s.At.UTC().Format("15:04:05"), s.Mints)
		}
		if s.Failed > 0 {
			cx, cy := xe-bw/2, yM(s.Failed)
			fmt.Fprintf(&b, `<path class="failed" d="M%.1f %.1fl8 8m0 -8l-8 8"><title>%s: %d failed mints</title></path>`, cx-4, cy-4, s.At.UTC().Format("15:04:05"), s.Failed)
		}
	}
	if len(samples) == 0 {
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" class="empty">collecting samples…</text>`, left+pw/2, top+ph/2)
	}
	fmt.Fprintf(&b, `</svg><div class="legend"><span class="k checks"></span>Checks (every decision) <span class="k mint"></span>mints <span class="k failed">✕</span>failed mints · one sample per %s, %d shown of %d</div>`,
		short(every), len(samples), History)
	return template.HTML(b.String())
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten, at least 4, so the
// axis ticks at quarters are whole numbers more often than not.
func niceCeil(v int64) int64 {
	if v <= 4 {
		return 4
	}
	for p := int64(1); ; p *= 10 {
		for _, m := range []int64{1, 2, 4, 5, 8} {
			if m*p >= v {
				return m * p
			}
		}
	}
}

var page = template.Must(template.New("status").Funcs(funcs).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{{.Refresh}}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tokenbroker status</title>
<style>
:root{--bg:#0f1419;--card:#171e26;--line:#26313d;--text:#e6edf3;--dim:#8b98a5;--ok:#3fb950;--warn:#d29922;--bad:#f85149;--acc:#58a6ff;--mint:#f0883e}
*{box-sizing:border-box}body{margin:0;background:var(--bg);color:var(--text);font:14px/1.45 ui-sans-serif,system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
main{max-width:1240px;margin:0 auto;padding:24px}
header{display:flex;align-items:baseline;gap:16px;margin-bottom:18px}h1{font-size:20px;margin:0;font-weight:600}h1 b{color:var(--acc)}
.sub{color:var(--dim);font-size:12px}
.tiles{display:grid;grid-template-columns:repeat(5,1fr);gap:12px;margin-bottom:16px}
.tile{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:14px 16px}
.tile .v{font-size:26px;font-weight:650;font-variant-numeric:tabular-nums}.tile .l{color:var(--dim);font-size:12px;text-transform:uppercase;letter-spacing:.05em}
.tile.save .v{color:var(--ok)}
.panel{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:14px 16px;margin-bottom:16px}
.panel h2{font-size:13px;margin:0 0 10px;color:var(--dim);text-transform:uppercase;letter-spacing:.05em;font-weight:600}
table{width:100%;border-collapse:collapse;font-variant-numeric:tabular-nums}
th{color:var(--dim);font-weight:500;font-size:12px;text-align:left;padding:6px 8px;border-bottom:1px solid var(--line)}
td{padding:9px 8px;border-bottom:1px solid var(--line);vertical-align:middle}tr:last-child td{border-bottom:0}
td.name{font-weight:600}td.name small{display:block;color:var(--dim);font-weight:400}
.state{display:inline-flex;align-items:center;gap:6px;padding:2px 9px;border-radius:99px;font-size:12px;background:#ffffff0d}
.state:before{content:"";width:8px;height:8px;border-radius:50%;background:var(--dim)}
.fresh:before{background:var(--ok)}.refreshing:before{background:var(--acc)}.failing:before{background:var(--bad)}.expired:before{background:var(--warn)}
.countdown{font-weight:600}.err{color:var(--bad);font-size:12px;display:block;max-width:220px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.budget{min-width:150px}.track{height:8px;border-radius:4px;background:#ffffff14;overflow:hidden;margin-top:4px}
.bar{height:100%;background:var(--ok)}.bar.warn{background:var(--warn)}.bar.full{background:var(--bad)}
.dim{color:var(--dim)}.saved{color:var(--ok);font-weight:600}
.chart{width:100%;height:auto;display:block}.chart .grid{stroke:var(--line);stroke-width:1}.chart .axisline{stroke:var(--dim);stroke-width:1}
.chart text{fill:var(--dim);font-size:11px}.chart .yl{text-anchor:end}.chart .yr{text-anchor:start}.chart .x{text-anchor:middle}.chart .axis{font-size:12px;text-anchor:middle}
.chart rect.checks{fill:var(--acc);opacity:.75}.chart circle.mint{fill:var(--mint);stroke:var(--bg);stroke-width:1}.chart path.failed{stroke:var(--bad);stroke-width:2.5;fill:none}
.chart .empty{fill:var(--dim);text-anchor:middle;font-size:12px}
.legend{color:var(--dim);font-size:12px;margin-top:4px}.k{display:inline-block;width:10px;height:10px;margin:0 6px -1px 12px;vertical-align:baseline}.k.checks{background:var(--acc);opacity:.75}.k.mint{background:var(--mint);border-radius:50%}.k.failed{width:auto;height:auto;color:var(--bad);font-weight:700}
td.routes{color:var(--dim);font-size:12px}td.routes div{white-space:nowrap}.fail{color:var(--warn);font-size:12px;display:block;max-width:260px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.pager{margin-top:10px;color:var(--dim);font-size:12px}.pager input{width:70px;background:var(--bg);color:var(--text);border:1px solid var(--line);border-radius:4px}
table.checks td,table.denials td{padding:6px 8px}tr.total td{font-weight:600;border-top:1px solid var(--line)}.mono{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px}
</style></head><body><main>
<header><h1><b>token</b>broker</h1><span class="sub">status · refreshes every {{.Refresh}}s · {{.Now.UTC.Format "2006-01-02 15:04:05 UTC"}}</span></header>
<section class="tiles">
<div class="tile save"><div class="l">dollars avoided</div><div class="v">{{dollars .TotalSaved}}</div></div>
<div class="tile"><div class="l">Checks, 1 hour · denied</div><div class="v">{{.ChecksHour.Total}} <span class="dim">· {{.ChecksHour.Denied}}</span></div></div>
<div class="tile"><div class="l">served from cache</div><div class="v">{{.TotalHits}}</div></div>
<div class="tile"><div class="l">mints, 30 days</div><div class="v">{{.TotalMints30}}</div></div>
<div class="tile"><div class="l">spent, 30 days</div><div class="v">{{dollars .TotalSpent}}</div></div>
</section>
<section class="panel"><h2>Checks and mints over time</h2>{{.Chart}}</section>
<section class="panel"><h2>Credentials and broker clients</h2>
<table id="rows"><thead><tr><th>name</th><th>routes</th><th>state</th><th>expires in</th><th>last mint</th><th>mints 1h / 24h / 30d</th><th>budget</th><th>hit ratio</th><th>avoided</th></tr></thead><tbody>
{{range .Rows}}<tr class="row" data-kind="{{.Kind}}">
<td class="name">{{.Name}}<small>{{kind .Kind}}{{if .Upstream}} · {{.Upstream}}{{end}}{{if .Subscribers}} · pushed to {{.Subscribers}} SDS {{if eq .Subscribers 1}}subscriber{{else}}subscribers{{end}}{{end}}</small></td>
<td class="routes">{{range .Routes}}<div>{{.}}</div>{{else}}{{if eq .Kind "credential"}}<span class="dim">context_extensions only</span>{{end}}{{end}}</td>
<td><span class="state {{.State}}">{{.State}}</span>{{if .LastError}}<span class="err" title="{{.LastError}}">{{.LastError}}</span>{{else if .LastFailure}}<span class="fail" title="{{.LastFailure}}">last failed {{ago .LastFailureAt $.Now}}: {{.LastFailure}}</span>{{end}}</td>
<td class="countdown"{{if not .ExpiresAt.IsZero}} data-expires="{{unix .ExpiresAt}}"{{end}}>{{if .ExpiresAt.IsZero}}<span class="dim">—</span>{{else}}{{left .ExpiresIn}}{{end}}</td>
<td>{{ago .LastMint $.Now}}{{if not .LastMint.IsZero}}<small class="dim"> · {{printf "%.0f" .LastLatencyMS}} ms</small>{{end}}</td>
<td>{{.MintsHour}} / {{.MintsDay}} / {{.Mints30d}}</td>
<td class="budget">{{if .BudgetLimit}}{{.BudgetUsed}} of {{.BudgetLimit}} <span class="dim">per {{.BudgetWindow}}{{if .Enforce}} · enforced{{end}}</span><div class="track"><div class="{{barclass .}}" style="{{width .BudgetPercent}}"></div></div>{{else}}<span class="dim">no budget</span><div class="track"><div class="bar" style="width:0%"></div></div>{{end}}</td>
<td>{{pct .HitRatio}} <span class="dim">of {{.Requests}}</span></td>
<td class="saved">{{dollars .DollarsSaved}}</td>
</tr>{{else}}<tr><td colspan="9" class="dim">No credentials or broker clients yet.</td></tr>{{end}}
</tbody></table>{{if gt .Pages 1}}
<form class="pager" method="get">rows {{add .RowsFrom 1}}–{{add .RowsFrom (len .Rows)}} of {{.RowsTotal}}{{if .TotalsListedOnly}} <span class="dim">(the 30-day tiles add up these rows)</span>{{end}} · page <input type="number" name="page" min="1" max="{{.Pages}}" value="{{.Page}}"> of {{.Pages}} <button>show</button></form>{{end}}</section>
<section class="panel"><h2>Checks by credential · last hour / last day</h2>
<table class="checks" id="checks"><thead><tr><th>credential</th><th>allowed</th><th>no route</th><th>unknown credential</th><th>source not allowed</th><th>token unavailable</th><th>budget</th><th>malformed</th></tr></thead><tbody>
{{range .Checks}}<tr class="checkrow" data-credential="{{.Credential}}"><td class="name">{{credlabel .Credential}}</td><td>{{hd .Hour.Allowed .Day.Allowed}}</td><td>{{hd .Hour.NoRoute .Day.NoRoute}}</td><td>{{hd .Hour.UnknownCredential .Day.UnknownCredential}}</td><td>{{hd .Hour.SourceNotAllowed .Day.SourceNotAllowed}}</td><td>{{hd .Hour.TokenUnavailable .Day.TokenUnavailable}}</td><td>{{hd .Hour.Budget .Day.Budget}}</td><td>{{hd .Hour.Malformed .Day.Malformed}}</td></tr>
{{end}}<tr class="total"><td>total</td><td>{{hd .ChecksHour.Allowed .ChecksDay.Allowed}}</td><td>{{hd .ChecksHour.NoRoute .ChecksDay.NoRoute}}</td><td>{{hd .ChecksHour.UnknownCredential .ChecksDay.UnknownCredential}}</td><td>{{hd .ChecksHour.SourceNotAllowed .ChecksDay.SourceNotAllowed}}</td><td>{{hd .ChecksHour.TokenUnavailable .ChecksDay.TokenUnavailable}}</td><td>{{hd .ChecksHour.Budget .ChecksDay.Budget}}</td><td>{{hd .ChecksHour.Malformed .ChecksDay.Malformed}}</td></tr>
</tbody></table></section>
<section class="panel"><h2>Recent denials</h2>
<table class="denials" id="denials"><thead><tr><th>time (UTC)</th><th>transport</th><th>host</th><th>path</th><th>method</th><th>reason</th><th>credential</th><th>source principal</th></tr></thead><tbody>
{{range .Denials}}<tr class="denial"><td>{{clock .At}} <span class="dim">· {{ago .At $.Now}}</span></td><td>{{transport .Transport}}</td><td class="mono">{{.Host}}</td><td class="mono">{{.Segment}}</td><td>{{.Method}}</td><td class="err-reason">{{.Reason}}</td><td>{{.Credential}}</td><td class="mono">{{.Principal}}</td></tr>
{{else}}<tr><td colspan="8" class="dim">No denials since start.</td></tr>{{end}}
</tbody></table></section>
</main>
<script>
(function(){var skew=Date.now()-{{unix .Now}};function tick(){document.querySelectorAll('[data-expires]').forEach(function(e){var s=Math.floor((+e.dataset.expires-(Date.now()-skew))/1000);if(s<=0){e.textContent='expired';return}var h=Math.floor(s/3600),m=Math.floor(s%3600/60),x=s%60;e.textContent=h>0?h+'h '+String(m).padStart(2,'0')+'m':(m>0?m+'m '+String(x).padStart(2,'0')+'s':x+'s')})}tick();setInterval(tick,1000)})();
</script>
</body></html>
`))
