package admin

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
)

func TestInvalidate(t *testing.T) {
	var purged []string
	s := New(nil)
	s.Handle("POST /admin/credentials/{name}/invalidate", Invalidate("adm1n", func(name string, local bool) (int, bool) {
		if name != "billing" {
			return 0, false
		}
		if local {
			name += " (local)"
		}
		purged = append(purged, name)
		return 1, true
	}))
	tests := []struct {
		name, path, auth string
		status           int
		body             string
	}{
		{"no token", "/admin/credentials/billing/invalidate", "", 401, "admin token required"},
		{"wrong token", "/admin/credentials/billing/invalidate", "Bearer nope", 401, "admin token required"},
		{"unknown", "/admin/credentials/other/invalidate", "Bearer adm1n", 404, "no such credential"},
		{"ok", "/admin/credentials/billing/invalidate", "Bearer adm1n", 200, `{"invalidated":1}`},
		{"local", "/admin/credentials/billing/invalidate?local=true", "Bearer adm1n", 200, `{"invalidated":1}`},
		{"local false", "/admin/credentials/billing/invalidate?local=false", "Bearer adm1n", 200, `{"invalidated":1}`},
		{"local garbage", "/admin/credentials/billing/invalidate?local=maybe", "Bearer adm1n", 400, "local must be true or false"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodPost, tt.path, nil)
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			rec := httptest.NewRecorder()
			s.ServeHTTP(rec, req)
			if rec.Code != tt.status || !strings.Contains(rec.Body.String(), tt.body) {
				t.Errorf("got %d %q, want %d %q", rec.Code, rec.Body.String(), tt.status, tt.body)
			}
		})
	}
	if want := []string{"billing", "billing (local)", "billing"}; !slices.Equal(purged, want) {
		t.Errorf("purged %q, want %q", purged, want)
	}
}
