package admin

import (
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
)

// Purge forgets every cached token of the named credential and reports how
// many it dropped; known is false when no such credential exists. local
// keeps the shared tier's copy (only this replica's goes).
type Purge func(name string, local bool) (dropped int, known bool)

// Invalidate serves POST /admin/credentials/{name}/invalidate[?local=true].
// When token is not empty the request must carry "Authorization: Bearer
// <token>".
func Invalidate(token string, purge Purge) http.Handler {
	return RequireToken(token, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		local := false
		if v := r.URL.Query().Get("local"); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				w.WriteHeader(http.StatusBadRequest)
				_ = json.NewEncoder(w).Encode(map[string]string{"error": "local must be true or false"})
				return
			}
			local = b
		}
		n, known := purge(r.PathValue("name"), local)
		if !known {
			w.WriteHeader(http.StatusNotFound)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": "no such credential"})
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]int{"invalidated": n})
	}))
}

// RequireToken lets a request through only with the bearer token (any
// request when token is empty). The comparison takes constant time.
func RequireToken(token string, next http.Handler) http.Handler {
	if token == "" {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="tokenbroker admin"`)
			http.Error(w, "admin token required", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}
