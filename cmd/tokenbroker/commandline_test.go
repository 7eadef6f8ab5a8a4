package main

import (
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/tokenbroker/tokenbroker/config"
)

// TestSubcommandHelp: every command's --help (and -h, and `help CMD`) exits
// 0, writes to stdout, and spells each flag the way the README does.
func TestSubcommandHelp(t *testing.T) {
	for _, cmd := range []string{"serve", "validate", "check", "health", "invalidate", "version"} {
		for _, args := range [][]string{{cmd, "--help"}, {cmd, "-h"}, {"help", cmd}, {cmd, "--config", "x.yaml", "--help"}} {
			code, out, errs := runCmd(args...)
			if code != 0 || errs != "" {
				t.Errorf("%v: exit %d, stderr %q", args, code, errs)
				continue
			}
			if !strings.HasPrefix(out, "usage: tokenbroker "+cmd) {
				t.Errorf("%v: help starts %q", args, out[:min(len(out), 60)])
			}
			if regexp.MustCompile(`(?m)^\s+-[a-z]`).MatchString(out) {
				t.Errorf("%v: a flag spelled with one dash:\n%s", args, out)
			}
		}
	}
	_, out, _ := runCmd("check", "--help")
	for _, flag := range []string{"--host HOST", "--config", "--tls-ca", "--tls-cert", "--tls-key", "--tls-server-name", "--grpc"} {
		if !strings.Contains(out, flag) {
			t.Errorf("check --help lacks %s:\n%s", flag, out)
		}
	}
	if code, out, _ := runCmd("--help"); code != 0 || !strings.Contains(out, "--help lists") {
		t.Errorf("tokenbroker --help: exit %d\n%s", code, out)
	}
}

// TestUnexpectedArguments: a stray word is an error (exit 2) naming it, not
// something to ignore.
func TestUnexpectedArguments(t *testing.T) {
	cfg := write(t, "tb.yaml", "listen:\n  grpc: 127.0.0.1:0\n")
	for _, args := range [][]string{
		{"validate", "--config", cfg, "extra"},
		{"serve", "--config", cfg, "extra"},
		{"check", "--host", "a.example.com", "/v1/orders"}, // a path without --path
		{"health", "grpc"},
		{"version", "now"},
	} {
		code, _, errs := runCmd(args...)
		if code != 2 || !strings.Contains(errs, `unexpected argument "`+args[len(args)-1]+`"`) {
			t.Errorf("%v: exit %d, stderr %q", args, code, errs)
		}
	}
	if code, _, errs := runCmd("check", "--hots", "a"); code != 2 || !strings.Contains(errs, "hots") {
		t.Errorf("unknown flag: exit %d %q", code, errs)
	}
}

func TestVersion(t *testing.T) {
	code, out, _ := runCmd("version")
	if code != 0 || !strings.HasPrefix(out, "tokenbroker ") || !strings.Contains(out, runtime.Version()) {
		t.Fatalf("version: %d %q", code, out)
	}
	for _, want := range []string{"commit:", "built:", "go:"} {
		if !strings.Contains(out, want) {
			t.Errorf("version lacks %q: %s", want, out)
		}
	}

	// What -ldflags -X sets wins; what it leaves empty comes from the build
	// information (a test binary carries no VCS stamp: "unknown").
	defer func(v, c, d string) { version, commit, date = v, c, d }(version, commit, date)
	version, commit, date = "1.2.3", "0123456789abcdef", "2026-11-30T12:00:00Z"
	code, out, _ = runCmd("version", "--json")
	var b buildInfo
	if err := json.Unmarshal([]byte(out), &b); err != nil || code != 0 {
		t.Fatalf("version --json: %d %q %v", code, out, err)
	}
	want := buildInfo{Version: "1.2.3", Commit: "0123456789abcdef", Date: "2026-11-30T12:00:00Z", GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if b != want {
		t.Fatalf("version --json: %+v, want %+v", b, want)
	}
	version, commit, date = "", "", ""
	if b := currentBuild(); b.Version == "" || b.Commit == "" || b.Date == "" || b.GoVersion != runtime.Version() {
		t.Fatalf("without ldflags: %+v", b)
	}
}

// TestBuildInfoMetric: /metrics says which build runs.
func TestBuildInfoMetric(t *testing.T) {
	defer func(v, c string) { version, commit = v, c }(version, commit)
	version, commit = "1.2.3", "abc123"
	cfg, err := config.Parse("t.yaml", []byte("listen:\n  grpc: \"\"\n  admin: 127.0.0.1:0\n"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := start(cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer s.stop()
	resp, err := http.Get("http://" + s.admin.addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want := `tokenbroker_build_info{commit="abc123",goversion="` + runtime.Version() + `",version="1.2.3"} 1`
	if !strings.Contains(string(body), want) {
		t.Fatalf("/metrics lacks %s", want)
	}
}
