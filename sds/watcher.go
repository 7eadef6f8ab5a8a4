package sds

import (
	"context"
	"errors"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
)

// errUnverified answers a watch whose node is not one this server put on a
// request: it cannot happen through the callbacks, and fails closed if it
// ever does.
var errUnverified = errors.New("sds: request without a verified identity")

// watcher is the go-control-plane cache the xDS server talks to. It routes
// each watch to the LinearCache of the identity whose node the callbacks put
// on the request — looked up by pointer, so a node id a client declares,
// whatever it says, never selects another identity's secrets.
type watcher struct{ s *Server }

var _ cachev3.Cache = watcher{}

func (w watcher) cacheFor(n *corev3.Node) *cachev3.LinearCache {
	if v, ok := w.s.byNode.Load(n); ok {
		return v.(*identity).cache
	}
	return nil
}

// CreateWatch implements cachev3.ConfigWatcher for State-of-the-World streams.
func (w watcher) CreateWatch(req *cachev3.Request, sub cachev3.Subscription, ch chan cachev3.Response) (func(), error) {
	c := w.cacheFor(req.GetNode())
	if c == nil {
		return nil, errUnverified
	}
	return c.CreateWatch(req, sub, ch)
}

// CreateDeltaWatch implements cachev3.ConfigWatcher for Delta streams.
func (w watcher) CreateDeltaWatch(req *cachev3.DeltaRequest, sub cachev3.Subscription, ch chan cachev3.DeltaResponse) (func(), error) {
	c := w.cacheFor(req.GetNode())
	if c == nil {
		return nil, errUnverified
	}
	return c.CreateDeltaWatch(req, sub, ch)
}

// Fetch implements cachev3.ConfigFetcher. REST polling is not served: a
// unary call has no stream to keep fresh, and FetchSecrets is unimplemented.
func (watcher) Fetch(context.Context, *cachev3.Request) (cachev3.Response, error) {
	return nil, errors.New("sds: fetch is not served; use StreamSecrets or DeltaSecrets")
}
