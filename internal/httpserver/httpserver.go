// Package httpserver builds the HTTP servers tokenbroker listens with. Every
// one is bounded: a client that trickles its headers, declares a body it
// never sends, reads the answer slowly or sits idle holds a connection (and
// its goroutine and buffers) for a bounded time, and its headers for a
// bounded size.
package httpserver

import (
	"net/http"
	"time"
)

// Defaults for Limits; each stops a client that holds a connection open.
const (
	// ReadHeaderTimeout: headers sent a byte at a time (slowloris).
	ReadHeaderTimeout = 5 * time.Second
	// ReadTimeout: a body declared and never (or slowly) sent. It counts from
	// the first byte of the request, so it includes ReadHeaderTimeout.
	ReadTimeout = 10 * time.Second
	// WriteTimeout: an answer read slowly. It counts from the end of the
	// request's headers, so it must also cover the longest wait for a mint.
	WriteTimeout = time.Minute
	// IdleTimeout: a kept-alive connection with no request.
	IdleTimeout = 2 * time.Minute
	// MaxHeaderBytes: huge or many headers (answered 431).
	MaxHeaderBytes = 64 << 10
)

// Limits bound one server. A zero field takes its default above.
type Limits struct {
	ReadHeader, Read, Write, Idle time.Duration
	MaxHeaderBytes                int
}

// New returns an http.Server for h with every limit set.
func New(h http.Handler, l Limits) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: or(l.ReadHeader, ReadHeaderTimeout),
		ReadTimeout:       or(l.Read, ReadTimeout),
		WriteTimeout:      or(l.Write, WriteTimeout),
		IdleTimeout:       or(l.Idle, IdleTimeout),
		MaxHeaderBytes:    or(l.MaxHeaderBytes, MaxHeaderBytes),
	}
}

func or[T int | time.Duration](v, def T) T {
	if v > 0 {
		return v
	}
	return def
}
