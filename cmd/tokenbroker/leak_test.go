package main

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them, and
// removes the binary the process tests built (buildOnce), which would
// otherwise stay in the temporary folder after every run.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		if dir := builtDir.Load(); dir != nil {
			_ = os.RemoveAll(*dir)
		}
		os.Exit(code)
	}))
}
