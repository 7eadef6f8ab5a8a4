package sds

import (
	"context"
	"sync"
	"sync/atomic"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
)

// closer lets this server end one stream with a status of its own — a
// stream that has subscribed to nothing it may have, after the grace
// period. go-control-plane offers no way to end one stream: its loop ends
// when a request fails a callback, which a silent client never sends, or
// when its reader sees Recv fail. So every stream reads through a pump
// whose Recv also returns when the closer fires; the loop then ends, the
// handler returns the closer's status, and gRPC ends the stream.
type closer struct {
	ctx    context.Context // the stream's, cancelled by close
	cancel context.CancelFunc
	err    atomic.Pointer[error] // the status close gave
}

type closerKey struct{}

func newCloser(parent context.Context) *closer {
	c := &closer{}
	c.ctx, c.cancel = context.WithCancel(parent)
	c.ctx = context.WithValue(c.ctx, closerKey{}, c)
	return c
}

// closerOf returns the closer of the stream whose context ctx is; nil for
// a context that did not come through service.
func closerOf(ctx context.Context) *closer {
	c, _ := ctx.Value(closerKey{}).(*closer)
	return c
}

// close ends the stream with err (a gRPC status).
func (c *closer) close(err error) {
	c.err.CompareAndSwap(nil, &err)
	c.cancel()
}

// result is what the handler returns: the closer's status when it ended
// the stream, else go-control-plane's answer.
func (c *closer) result(err error) error {
	if p := c.err.Load(); p != nil {
		return *p
	}
	return err
}

// pump reads a stream's requests in its own goroutine, so that Recv can
// give up when the closer fires while the client sends nothing. One
// goroutine per stream, parked in gRPC's Recv most of its life.
type pump[M any] struct {
	c    *closer
	recv func() (*M, error)
	once sync.Once
	ch   chan received[M]
}

type received[M any] struct {
	m   *M
	err error
}

func newPump[M any](c *closer, recv func() (*M, error)) *pump[M] {
	return &pump[M]{c: c, recv: recv, ch: make(chan received[M])}
}

func (p *pump[M]) run() {
	for {
		m, err := p.recv()
		select {
		case p.ch <- received[M]{m, err}:
		case <-p.c.ctx.Done(): // the stream ended: gRPC's Recv fails too, nothing waits
			return
		}
		if err != nil {
			return
		}
	}
}

// Recv returns the next request, or an error once the stream ends or the
// closer fires.
func (p *pump[M]) Recv() (*M, error) {
	p.once.Do(func() { go p.run() })
	select {
	case r := <-p.ch:
		return r.m, r.err
	case <-p.c.ctx.Done():
		return nil, p.c.ctx.Err()
	}
}

// sotwStream and deltaStream are the gRPC streams as go-control-plane sees
// them: the closer's context, Recv through the pump, the rest as is.
type sotwStream struct {
	secretv3.SecretDiscoveryService_StreamSecretsServer
	p *pump[discoveryv3.DiscoveryRequest]
}

func (s sotwStream) Context() context.Context                     { return s.p.c.ctx }
func (s sotwStream) Recv() (*discoveryv3.DiscoveryRequest, error) { return s.p.Recv() }

type deltaStream struct {
	secretv3.SecretDiscoveryService_DeltaSecretsServer
	p *pump[discoveryv3.DeltaDiscoveryRequest]
}

func (s deltaStream) Context() context.Context                          { return s.p.c.ctx }
func (s deltaStream) Recv() (*discoveryv3.DeltaDiscoveryRequest, error) { return s.p.Recv() }
