package admin

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	body, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(body)
}

func TestEndpoints(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "tokenbroker_test_total", Help: "x"})
	reg.MustRegister(c)
	c.Inc()
	s := New(reg)
	if code, _ := get(t, s, "/healthz"); code != 200 {
		t.Fatalf("healthz %d", code)
	}
	if code, _ := get(t, s, "/readyz"); code != 503 {
		t.Fatalf("readyz before ready %d", code)
	}
	s.SetReady(true)
	if code, _ := get(t, s, "/readyz"); code != 200 {
		t.Fatalf("readyz when ready %d", code)
	}
	s.SetReady(false)
	if code, _ := get(t, s, "/readyz"); code != 503 {
		t.Fatalf("readyz during shutdown %d", code)
	}
	if code, body := get(t, s, "/metrics"); code != 200 || !strings.Contains(body, "tokenbroker_test_total 1") {
		t.Fatalf("metrics %d %q", code, body)
	}
	if code, _ := get(t, s, "/nope"); code != 404 {
		t.Fatalf("unknown path %d", code)
	}
}
