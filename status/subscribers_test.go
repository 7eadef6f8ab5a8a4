package status

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/cache"
	"github.com/tokenbroker/tokenbroker/config"
)

func TestPageShowsSDSSubscribers(t *testing.T) {
	clk := &clock{t: time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)}
	tokens, err := cache.New(cache.Options{Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	defer tokens.Close()
	p := New(tokens, nil, nil, map[string]*config.Credential{"billing": {}, "search": {}}, nil)
	if d := p.Data(); d.Rows[0].Subscribers != 0 {
		t.Fatal("subscribers without push mode")
	}
	p.SetSubscribers(func() map[string]int { return map[string]int{"billing": 42} })
	rows := map[string]Row{}
	for _, r := range p.Data().Rows {
		rows[r.Name] = r
	}
	if rows["billing"].Subscribers != 42 || rows["search"].Subscribers != 0 {
		t.Fatalf("rows %+v", rows)
	}
	if !strings.Contains(served(p.ServeHTML, "/status"), "pushed to 42 SDS subscribers") {
		t.Fatal("the page does not show the subscribers")
	}
	if !strings.Contains(served(p.ServeJSON, "/status.json"), `"sds_subscribers": 42`) {
		t.Fatal("status.json does not show the subscribers")
	}
}

// served is the body serve writes for a GET of path.
func served(serve func(http.ResponseWriter, *http.Request), path string) string {
	rec := httptest.NewRecorder()
	serve(rec, httptest.NewRequest("GET", path, nil))
	return rec.Body.String()
}
