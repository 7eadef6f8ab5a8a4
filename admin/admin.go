// Package admin serves the operator endpoints: /healthz, /readyz and /metrics.
package admin

import (
	"net/http"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tokenbroker/tokenbroker/internal/httpserver"
)

// Server is the admin HTTP handler.
type Server struct {
	mux   *http.ServeMux
	ready atomic.Bool
}

// New serves metrics from g. It starts not ready.
func New(g prometheus.Gatherer) *Server {
	s := &Server{mux: http.NewServeMux()}
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	s.mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !s.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	return s
}

// SetReady says whether the process should receive traffic: true once the
// configuration is loaded and the servers listen, false again on shutdown.
func (s *Server) SetReady(ready bool) { s.ready.Store(ready) }

// Handle adds another admin endpoint.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// NewHTTPServer returns the admin listener for s, with header, read, write
// and idle timeouts and a header size limit.
func (s *Server) NewHTTPServer() *http.Server { return httpserver.New(s, httpserver.Limits{}) }
