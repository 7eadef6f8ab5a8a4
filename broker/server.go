package broker

import (
	"net/http"

	"github.com/tokenbroker/tokenbroker/internal/httpserver"
)

// NewServer returns the broker's listener: POST broker.path, with header,
// read, write and idle timeouts and a header size limit. A body declared
// and never sent ends with the read timeout. The write timeout also covers
// the longest answer: two IdP requests (a forward after a failed mint) and
// the fleet lock's wait.
func (b *Broker) NewServer() *http.Server {
	longest := httpserver.WriteTimeout
	for _, u := range b.ups {
		longest = max(longest, 2*u.Timeout.D()+httpserver.WriteTimeout/2)
	}
	mux := http.NewServeMux()
	mux.Handle(b.cfg.Path, b)
	return httpserver.New(mux, httpserver.Limits{Write: longest})
}
