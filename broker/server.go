package broker

import (
	"net/http"
	"time"

	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/internal/httpserver"
)

// NewServer returns the broker's listener: POST broker.path, with header,
// read, write and idle timeouts and a header size limit. A body declared
// and never sent ends with the read timeout.
func (b *Broker) NewServer() *http.Server {
	mux := http.NewServeMux()
	mux.Handle(b.cfg.Path, b)
	ups := make([]config.BrokerUpstream, len(b.ups))
	for i, u := range b.ups {
		ups[i] = u.BrokerUpstream
	}
	return httpserver.New(mux, httpserver.Limits{Write: writeTimeout(ups)})
}

// WriteTimeout is the broker listener's write timeout for cfg: it covers
// the longest answer, two IdP requests (a forward after a failed mint) and
// the fleet lock's wait.
func WriteTimeout(cfg config.Broker) time.Duration { return writeTimeout(cfg.Upstreams) }

func writeTimeout(ups []config.BrokerUpstream) time.Duration {
	longest := httpserver.WriteTimeout
	for _, u := range ups {
		longest = max(longest, 2*u.Timeout.D()+httpserver.WriteTimeout/2)
	}
	return longest
}
