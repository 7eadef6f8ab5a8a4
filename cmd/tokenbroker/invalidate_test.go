package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestInvalidateCommandAsksTheAdminAPI: the command posts to the admin
// listener's invalidate endpoint, with ?local=true only under --local, and
// prints the answer.
func TestInvalidateCommandAsksTheAdminAPI(t *testing.T) {
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Method+" "+r.URL.RequestURI())
		_, _ = w.Write([]byte(`{"invalidated":1}` + "\n"))
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	for _, args := range [][]string{
		{"invalidate", "billing", "--admin", addr},
		{"invalidate", "--admin", addr, "--local", "billing"},
	} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 0 || out.String() != `{"invalidated":1}`+"\n" {
			t.Fatalf("%q: exit %d, out %q, err %q", args, code, out.String(), errb.String())
		}
	}
	want := []string{
		"POST /admin/credentials/billing/invalidate",
		"POST /admin/credentials/billing/invalidate?local=true",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("requests %q, want %q", got, want)
	}
}
