package main

import (
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// Set at build time (make build, make release, the Dockerfile):
//
//	-ldflags "-X main.version=1.2.0 -X main.commit=<git sha> -X main.date=<RFC 3339>"
//
// Empty means "not set": buildInfo then asks debug.ReadBuildInfo.
var version, commit, date string

// buildInfo says which build is running.
type buildInfo struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	Date      string `json:"date"` // build date; without ldflags, the commit's time
	GoVersion string `json:"go_version"`
	Platform  string `json:"platform"` // GOOS/GOARCH
}

// currentBuild fills what ldflags left empty from the module and VCS
// information the Go toolchain embeds (go build in a git checkout, go
// install module@version), and says "unknown" for what neither knows.
func currentBuild() buildInfo {
	b := buildInfo{Version: version, Commit: commit, Date: date,
		GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.GoVersion != "" {
			b.GoVersion = bi.GoVersion
		}
		if b.Version == "" && bi.Main.Version != "" {
			b.Version = bi.Main.Version // "(devel)" for a plain go build without VCS stamping
		}
		var modified bool
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if b.Commit == "" {
					b.Commit = s.Value
				}
			case "vcs.time":
				if b.Date == "" {
					b.Date = s.Value
				}
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
		if modified && commit == "" && b.Commit != "" {
			b.Commit += "-dirty"
		}
	}
	for _, f := range []*string{&b.Version, &b.Commit, &b.Date} {
		if *f == "" {
			*f = "unknown"
		}
	}
	return b
}

// buildVersion is the version alone, for log lines.
func buildVersion() string { return currentBuild().Version }

// buildInfoGauge is tokenbroker_build_info: always 1, the build in its
// labels, so dashboards and alerts can tell which build each replica runs.
func buildInfoGauge() prometheus.Collector {
	b := currentBuild()
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "tokenbroker_build_info",
		Help:        "Always 1; the labels say which build is running.",
		ConstLabels: prometheus.Labels{"version": b.Version, "commit": b.Commit, "goversion": b.GoVersion},
	})
	g.Set(1)
	return g
}

func cmdVersion(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("version", stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseArgs(fs, args); err != nil {
		return 2
	}
	b := currentBuild()
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(b)
		return 0
	}
	fmt.Fprintf(stdout, "tokenbroker %s\n  commit:   %s\n  built:    %s\n  go:       %s %s\n", b.Version, b.Commit, b.Date, b.GoVersion, b.Platform)
	return 0
}
