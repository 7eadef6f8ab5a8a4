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
func (p *Page) ServeHTML(w http.ResponseWriter, _ *http.Request) {
	d := p.Data()
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	// Inline style and script only; nothing is fetched from anywhere.
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:")
	_ = page.Execute(w, view{Data: d, Refresh: int(p.refresh.Seconds()), Chart: chart(d.Samples)})
}

type view struct {
	Data
	Refresh int
	Chart   template.HTML
}

var funcs = template.FuncMap{
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
}

func short(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm %02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh %02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

// chart draws mints and Checks per interval as an inline SVG.
func chart(samples []Sample) template.HTML {
	const w, h, pad = 560.0, 120.0, 4.0
	var maxC, maxM int64 = 1, 1
	for _, s := range samples {
		maxC, maxM = max(maxC, s.Checks), max(maxM, s.Mints)
	}
	line := func(v func(Sample) int64, top int64) string {
		var b strings.Builder
		for i, s := range samples {
			x := pad + (w-2*pad)*float64(i)/float64(max(len(samples)-1, 1))
			y := h - pad - (h-2*pad)*float64(v(s))/float64(top)
			fmt.Fprintf(&b, "%.1f,%.1f ", x, y)
		}
		return b.String()
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" viewBox="0 0 %.0f %.0f" preserveAspectRatio="none" role="img" aria-label="mints and Checks over time">`, w, h)
	for i := 1; i < 4; i++ {
		fmt.Fprintf(&b, `<line x1="0" x2="%.0f" y1="%.1f" y2="%.1f" class="grid"/>`, w, h*float64(i)/4, h*float64(i)/4)
	}
	if len(samples) > 1 {
		fmt.Fprintf(&b, `<polyline class="checks" points="%s"/>`, line(func(s Sample) int64 { return s.Checks }, maxC))
		fmt.Fprintf(&b, `<polyline class="mints" points="%s"/>`, line(func(s Sample) int64 { return s.Mints }, maxM))
	} else {
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" class="empty">collecting samples…</text>`, w/2, h/2)
	}
	fmt.Fprintf(&b, `</svg><div class="legend"><span class="k checks"></span>Checks (peak %d / interval) <span class="k mints"></span>mints (peak %d / interval)</div>`, maxC, maxM)
	return template.HTML(b.String())
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
.tiles{display:grid;grid-template-columns:repeat(4,1fr);gap:12px;margin-bottom:16px}
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
.chart{width:100%;height:140px}.chart .grid{stroke:var(--line);stroke-width:1}
.chart polyline{fill:none;stroke-width:2;stroke-linejoin:round;vector-effect:non-scaling-stroke}.chart line{vector-effect:non-scaling-stroke}.chart .checks{stroke:var(--acc)}.chart .mints{stroke:var(--mint)}
.chart .empty{fill:var(--dim);text-anchor:middle;font-size:12px}
.legend{color:var(--dim);font-size:12px}.k{display:inline-block;width:10px;height:3px;margin:0 6px 3px 12px;vertical-align:middle}.k.checks{background:var(--acc)}.k.mints{background:var(--mint)}
</style></head><body><main>
<header><h1><b>token</b>broker</h1><span class="sub">status · refreshes every {{.Refresh}}s · {{.Now.UTC.Format "2006-01-02 15:04:05 UTC"}}</span></header>
<section class="tiles">
<div class="tile save"><div class="l">dollars avoided</div><div class="v">{{dollars .TotalSaved}}</div></div>
<div class="tile"><div class="l">served from cache</div><div class="v">{{.TotalHits}}</div></div>
<div class="tile"><div class="l">mints, 30 days</div><div class="v">{{.TotalMints30}}</div></div>
<div class="tile"><div class="l">spent, 30 days</div><div class="v">{{dollars .TotalSpent}}</div></div>
</section>
<section class="panel"><h2>Mints and Checks over time</h2>{{.Chart}}</section>
<section class="panel"><h2>Credentials and broker clients</h2>
<table id="rows"><thead><tr><th>name</th><th>state</th><th>expires in</th><th>last mint</th><th>mints 1h / 24h / 30d</th><th>budget</th><th>hit ratio</th><th>avoided</th></tr></thead><tbody>
{{range .Rows}}<tr class="row" data-kind="{{.Kind}}">
<td class="name">{{.Name}}<small>{{kind .Kind}}{{if .Upstream}} · {{.Upstream}}{{end}}{{if .Subscribers}} · pushed to {{.Subscribers}} SDS {{if eq .Subscribers 1}}subscriber{{else}}subscribers{{end}}{{end}}</small></td>
<td><span class="state {{.State}}">{{.State}}</span>{{if .LastError}}<span class="err" title="{{.LastError}}">{{.LastError}}</span>{{end}}</td>
<td class="countdown"{{if not .ExpiresAt.IsZero}} data-expires="{{unix .ExpiresAt}}"{{end}}>{{if .ExpiresAt.IsZero}}<span class="dim">—</span>{{else}}{{left .ExpiresIn}}{{end}}</td>
<td>{{ago .LastMint $.Now}}{{if not .LastMint.IsZero}}<small class="dim"> · {{printf "%.0f" .LastLatencyMS}} ms</small>{{end}}</td>
<td>{{.MintsHour}} / {{.MintsDay}} / {{.Mints30d}}</td>
<td class="budget">{{if .BudgetLimit}}{{.BudgetUsed}} of {{.BudgetLimit}} <span class="dim">per {{.BudgetWindow}}{{if .Enforce}} · enforced{{end}}</span><div class="track"><div class="{{barclass .}}" style="{{width .BudgetPercent}}"></div></div>{{else}}<span class="dim">no budget</span><div class="track"><div class="bar" style="width:0%"></div></div>{{end}}</td>
<td>{{pct .HitRatio}} <span class="dim">of {{.Requests}}</span></td>
<td class="saved">{{dollars .DollarsSaved}}</td>
</tr>{{else}}<tr><td colspan="8" class="dim">No credentials or broker clients yet.</td></tr>{{end}}
</tbody></table></section>
</main>
<script>
(function(){var skew=Date.now()-{{unix .Now}};function tick(){document.querySelectorAll('[data-expires]').forEach(function(e){var s=Math.floor((+e.dataset.expires-(Date.now()-skew))/1000);if(s<=0){e.textContent='expired';return}var h=Math.floor(s/3600),m=Math.floor(s%3600/60),x=s%60;e.textContent=h>0?h+'h '+String(m).padStart(2,'0')+'m':(m>0?m+'m '+String(x).padStart(2,'0')+'s':x+'s')})}tick();setInterval(tick,1000)})();
</script>
</body></html>
`))
