package examples_test

import (
	"bufio"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// testVersion is what the release test stamps into its build.
const testVersion = "0.0.0-releasetest"

// release runs `make release` once for this machine's platform (the other
// platforms differ only in GOOS/GOARCH), into a temporary folder.
var release = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "tokenbroker-release")
	if err != nil {
		return "", err
	}
	releaseDir.Store(&dir)
	cmd := exec.Command("make", "release", "DIST="+dir, "VERSION="+testVersion, "PLATFORMS="+runtime.GOOS+"/"+runtime.GOARCH)
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", &buildError{string(out)}
	}
	return dir, nil
})

// releaseDir is the folder release made, if it ran (TestMain removes it).
var releaseDir atomic.Pointer[string]

type buildError struct{ out string }

func (e *buildError) Error() string { return "make release: " + e.out }

// releaseBinary is the tokenbroker `make release` built for this platform.
func releaseBinary(t *testing.T) string {
	t.Helper()
	dir, err := release()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "tokenbroker-"+testVersion+"-"+runtime.GOOS+"-"+runtime.GOARCH)
}

// TestMakeRelease: `make release` writes a static binary that knows its
// version, commit, date and Go version, the licence files, and SHA256SUMS
// that match them.
func TestMakeRelease(t *testing.T) {
	bin := releaseBinary(t)
	dir := filepath.Dir(bin)
	out, err := exec.Command(bin, "version", "--json").Output()
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Version, Commit, Date string
		GoVersion             string `json:"go_version"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("%s: %v", out, err)
	}
	head, _ := exec.Command("git", "rev-parse", "HEAD").Output()
	if v.Version != testVersion || v.Commit != strings.TrimSpace(string(head)) || v.Date == "unknown" || v.GoVersion != runtime.Version() {
		t.Errorf("version --json: %s (HEAD %s)", out, head)
	}
	if runtime.GOOS == "linux" {
		f, err := elf.Open(bin)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Error("the release binary is dynamically linked")
			}
		}
		f.Close()
	}

	sums, err := os.Open(filepath.Join(dir, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	defer sums.Close()
	listed := map[string]bool{}
	sc := bufio.NewScanner(sums)
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok {
			t.Fatalf("SHA256SUMS line %q", sc.Text())
		}
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		_, _ = io.Copy(h, f)
		f.Close()
		if hex.EncodeToString(h.Sum(nil)) != sum {
			t.Errorf("SHA256SUMS: %s does not match", name)
		}
		listed[name] = true
	}
	for _, want := range []string{filepath.Base(bin), "LICENSE", "NOTICE"} {
		if !listed[want] {
			t.Errorf("SHA256SUMS lacks %s", want)
		}
	}
}

// TestMakeReleasePlatforms: the release covers linux and darwin on amd64 and
// arm64 (each cross-compiles with the same command; TestMakeRelease builds one).
func TestMakeReleasePlatforms(t *testing.T) {
	out, err := exec.Command("make", "-s", "-C", "..", "-n", "release", "DIST=/nonexistent").CombinedOutput()
	if err != nil {
		t.Fatalf("make -n release: %v\n%s", err, out)
	}
	for _, p := range []string{"linux/amd64", "linux/arm64", "darwin/amd64", "darwin/arm64"} {
		if !strings.Contains(string(out), p) {
			t.Errorf("make release does not build %s:\n%s", p, out)
		}
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-X main.version=", "-X main.commit=", "-X main.date=", "SHA256SUMS"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("make release lacks %s", want)
		}
	}
}

// TestNoticeCoversDependencies: every module compiled into the binaries
// that ships a NOTICE file (Apache-2.0 §4(d)) is named in NOTICE.
func TestNoticeCoversDependencies(t *testing.T) {
	notice, err := os.ReadFile("../NOTICE")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("go", "list", "-deps", "-f", "{{with .Module}}{{if not .Main}}{{.Path}} {{.Dir}}{{end}}{{end}}", "../cmd/tokenbroker", "../cmd/devidp").Output()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		path, dir, ok := strings.Cut(line, " ")
		if !ok || seen[path] {
			continue
		}
		seen[path] = true
		for _, n := range []string{"NOTICE", "NOTICE.txt", "NOTICE.md"} {
			if _, err := os.Stat(filepath.Join(dir, n)); err == nil && !strings.Contains(string(notice), "\n"+path+"\n") {
				t.Errorf("%s ships %s; NOTICE does not carry it", path, n)
			}
		}
	}
	if len(seen) < 10 {
		t.Fatalf("go list found only %v", seen)
	}
	lic, err := os.ReadFile("../LICENSE")
	if err != nil || !strings.Contains(string(lic), "Apache License\n                           Version 2.0, January 2004") {
		t.Error("LICENSE is not the Apache License 2.0")
	}
}
