package main

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

// layers is ARCHITECTURE.md's import order: a package may import only
// packages of a lower layer. A new package gets its place here.
var layers = map[string]int{
	// Leaf helpers that import nothing of tokenbroker; any layer may use them.
	"internal/canonpath":       -1,
	"internal/credlabel":       -1,
	"internal/logthrottle":     -1,
	"internal/httpserver":      -1,
	"internal/testcerts":       -1, // test helpers: certificates, used by testpeer's TLS Redis
	"bench/internal/serveproc": -1, // the benchmarks' view of a serve process (start, /proc, its log) and their IdP server
	"config":                   0,
	"internal/testclock":       0,
	"internal/devidp":          0,
	"internal/testpeer":        0,
	"telemetry":                1, // spans for every layer above; knows config's tracing section only
	"credential":               2,
	"budget":                   2,
	"admin":                    2,
	"internal/tlsreload":       2,
	"cache":                    3,
	"filter":                   4,
	"broker":                   4,
	"envoy":                    5,
	"sds":                      5, // push mode: Envoy's SDS wire format beside envoy's ext_authz
	"status":                   5,
}

// TestImportsRunOneWay: cmd → envoy → filter → cache → credential, config
// where needed; nothing imports a package above (or beside) itself.
func TestImportsRunOneWay(t *testing.T) {
	const module = "github.com/tokenbroker/tokenbroker/"
	out, err := exec.Command("go", "list", "-json=ImportPath,Imports", module+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	layer := func(path string) (int, bool) {
		rel := strings.TrimPrefix(path, module)
		if n, ok := layers[rel]; ok {
			return n, true
		}
		if strings.HasPrefix(rel, "cmd/") || strings.HasPrefix(rel, "bench/") || strings.HasPrefix(rel, "examples") {
			return 9, true
		}
		return 0, false
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p struct {
			ImportPath string
			Imports    []string
		}
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		from, ok := layer(p.ImportPath)
		if !ok {
			t.Errorf("%s has no place in the import order (ARCHITECTURE.md, layers in this test)", p.ImportPath)
			continue
		}
		for _, imp := range p.Imports {
			if !strings.HasPrefix(imp, module) {
				continue
			}
			if to, ok := layer(imp); ok && to >= from {
				t.Errorf("%s imports %s: imports run one way (ARCHITECTURE.md)", p.ImportPath, imp)
			}
		}
	}
}
