package credential

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokenbroker/tokenbroker/config"
)

// StaticLifetime is the expiry given to a static value. A static value
// never expires; the cache needs an expiry, and ten years keeps the cache's
// refresh-ahead years away, so the file is not read again and again. A
// changed file is noticed through Changed instead.
const StaticLifetime = 10 * 365 * 24 * time.Hour

// changeCheckInterval is the most often Changed looks at the file.
const changeCheckInterval = time.Second

// Changer is implemented by sources whose current token can change before
// its expiry (a static value in a file). A caller holding the token in a
// cache drops it when Changed reports true.
type Changer interface {
	Changed() bool
}

// Static serves a fixed value, such as an API key, from configuration
// (possibly ${ENV}) or from a file that is read again when it changes.
type Static struct {
	// Now stamps Issued and paces Changed; nil means time.Now.
	Now func() time.Time

	name  string
	value string // when not from a file
	file  string

	lastCheck atomic.Int64 // unix nanoseconds of the last stat, to bound Changed's cost
	mu        sync.Mutex   // guards stamp
	stamp     fileStamp    // of the file content last returned by Token
}

// NewStatic builds a Static source for a credential of type static.
func NewStatic(c *config.Credential) (*Static, error) {
	if c == nil {
		return nil, errors.New("credential: nil configuration")
	}
	s := &Static{name: c.Name, value: c.Value.Reveal(), file: c.ValueFile}
	if s.file == "" && s.value == "" {
		return nil, fmt.Errorf("credential %q: value or value_file is required", c.Name)
	}
	if s.file != "" {
		if _, err := s.Token(context.Background()); err != nil {
			return nil, fmt.Errorf("credential %q: %w", c.Name, err)
		}
	}
	return s, nil
}

// Token returns the value, reading the file when there is one.
func (s *Static) Token(context.Context) (Token, error) {
	now := s.now()
	v := s.value
	if s.file != "" {
		st, err := stampOf(s.file)
		if err != nil {
			return Token{}, fmt.Errorf("value_file: %w", err)
		}
		b, err := readValue(s.file)
		if err != nil {
			return Token{}, fmt.Errorf("value_file: %w", err)
		}
		v = strings.TrimSpace(string(b))
		if v == "" {
			return Token{}, fmt.Errorf("value_file %s is empty", s.file)
		}
		// The file may have changed since the configuration was checked.
		if p := config.HeaderValueProblem(v); p != "" {
			return Token{}, fmt.Errorf("value_file %s: %s", s.file, p)
		}
		s.mu.Lock()
		s.stamp = st
		s.mu.Unlock()
	}
	return Token{Value: v, Type: "static", Issued: now, Expiry: now.Add(StaticLifetime)}, nil
}

// readValue reads a value file of at most config.MaxHeaderValue bytes: the
// value goes into a header on every request, and a file that grew to
// gigabytes (or /dev/zero) must fail rather than be read into memory.
func readValue(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, config.MaxHeaderValue+1))
	if err == nil && len(b) > config.MaxHeaderValue {
		err = fmt.Errorf("%s is larger than %d KiB", path, config.MaxHeaderValue>>10)
	}
	return b, err
}

// Changed reports whether the value file changed since Token last read it.
// It looks at the file at most once a second, so it is cheap on a hot path.
func (s *Static) Changed() bool {
	if s.file == "" {
		return false
	}
	now := s.now().UnixNano()
	last := s.lastCheck.Load()
	if now-last < int64(changeCheckInterval) || !s.lastCheck.CompareAndSwap(last, now) {
		return false
	}
	st, err := stampOf(s.file)
	if err != nil {
		return true // let Token report the problem
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return st != s.stamp
}

func (s *Static) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}
