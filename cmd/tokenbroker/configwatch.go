package main

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/fsnotify/fsnotify"
)

// configWatch reports changes to one configuration file. It watches the
// file's directory rather than the file, because the usual ways a file is
// replaced — an editor's write-and-rename, Kubernetes swapping the ConfigMap
// `..data` symlink — replace the inode a file watch would follow.
type configWatch struct {
	path string
	w    *fsnotify.Watcher
}

// watchConfig starts watching path's directory. Call it before reading the
// file, so that no change made after the read is missed.
func watchConfig(path string) (*configWatch, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watching %s: %w", path, err)
	}
	if err := w.Add(filepath.Dir(path)); err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("watching %s: %w", filepath.Dir(path), err)
	}
	return &configWatch{path: path, w: w}, nil
}

func (cw *configWatch) close() { _ = cw.w.Close() }

// concerns reports whether ev may have changed the configuration: an event on
// the file's own name or on the ConfigMap's `..data` link, other than a bare
// attribute change.
func (cw *configWatch) concerns(ev fsnotify.Event) bool {
	if ev.Op == fsnotify.Chmod {
		return false
	}
	base := filepath.Base(ev.Name)
	return base == filepath.Base(cw.path) || strings.HasPrefix(base, "..data")
}
