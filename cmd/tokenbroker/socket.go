package main

import (
	"net"
	"sync"
	"time"
)

// A socket is one bound listen address. The connections it accepts go to
// the server attached to it last, so a server can be replaced (new TLS
// settings) while the address keeps accepting: no caller is ever refused.
//
// Each attach returns a handoff, the net.Listener that one server serves.
// Once a newer server is attached the handoff is closed and its server
// drains; a connection the old server had not yet taken goes to the new one.
type socket struct {
	ln   net.Listener
	quit chan struct{} // closed by close
	done chan struct{} // closed when the accept loop has returned
	once sync.Once
	wg   sync.WaitGroup // connections being handed on again (handoff.Accept)

	mu      sync.Mutex    // guards the fields below
	cur     *handoff      // where accepted connections go; nil until the first attach
	changed chan struct{} // closed (and replaced) by every attach
}

// claimWait bounds how long a replaced server's last connections may take
// to be picked up by it (see handoff.settle): a safety net should a server
// never touch a connection it accepted, so a reload cannot hang on it.
const claimWait = 5 * time.Second

// maxAcceptDelay caps the back-off after a failed Accept (EMFILE and the
// like), as net/http does, so a descriptor shortage does not spin a CPU.
const maxAcceptDelay = time.Second

// bind listens on addr and starts accepting. Connections wait (in the
// accept loop, then the kernel's backlog) until a server is attached.
func bind(addr string) (*socket, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &socket{ln: ln, quit: make(chan struct{}), done: make(chan struct{}), changed: make(chan struct{})}
	go s.acceptLoop()
	return s, nil
}

// Addr is the bound address (port 0 resolved).
func (s *socket) Addr() net.Addr { return s.ln.Addr() }

func (s *socket) acceptLoop() {
	defer close(s.done)
	var delay time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			select {
			case <-s.quit:
				return
			default:
			}
			delay = min(max(2*delay, 5*time.Millisecond), maxAcceptDelay)
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-s.quit:
				t.Stop()
				return
			}
			continue
		}
		delay = 0
		s.deliver(c)
	}
}

// deliver hands c to the attached server, waiting for one if need be; c is
// closed when the socket closes first.
func (s *socket) deliver(c net.Conn) {
	for {
		s.mu.Lock()
		h, changed := s.cur, s.changed
		s.mu.Unlock()
		var closed <-chan struct{}
		var conns chan<- net.Conn // nil (blocks) until a server is attached
		if h != nil {
			closed, conns = h.closed, h.conns
		}
		select {
		case conns <- c:
			return
		case <-closed:
			// h is retired: wait for its successor (or the end).
			select {
			case <-changed:
			case <-s.quit:
				_ = c.Close()
				return
			}
		case <-changed:
		case <-s.quit:
			_ = c.Close()
			return
		}
	}
}

// attach makes a new handoff the one accepted connections go to, and closes
// the previous one (its server then sees its listener closed).
func (s *socket) attach() *handoff {
	h := &handoff{sock: s, conns: make(chan net.Conn), closed: make(chan struct{}), settled: make(chan struct{})}
	s.mu.Lock()
	old := s.cur
	s.cur = h
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
	if old != nil {
		_ = old.Close()
	}
	return h
}

// close stops accepting: the address is released at once and the attached
// handoff is closed. Connections already taken by a server are not touched.
func (s *socket) close() {
	s.once.Do(func() {
		close(s.quit)
		_ = s.ln.Close()
		<-s.done
		s.mu.Lock()
		h := s.cur
		s.mu.Unlock()
		if h != nil {
			_ = h.Close()
		}
		s.wg.Wait()
	})
}

// handoff is the net.Listener of one server on a socket.
type handoff struct {
	sock    *socket
	conns   chan net.Conn
	closed  chan struct{}
	settled chan struct{} // closed once closed and every accepted connection is claimed
	once    sync.Once

	mu        sync.Mutex // guards the fields below
	isClosed  bool
	unclaimed int // accepted by the server, not yet touched by it
}

// Accept returns the next connection for this handoff's server. After
// Close it never returns one: a connection that arrives at that moment is
// handed back to the socket, for the server attached next.
func (h *handoff) Accept() (net.Conn, error) {
	select {
	case c := <-h.conns:
		h.mu.Lock()
		if h.isClosed {
			h.mu.Unlock()
			h.sock.wg.Go(func() { h.sock.deliver(c) })
			return nil, net.ErrClosed
		}
		h.unclaimed++
		h.mu.Unlock()
		return &claimedConn{Conn: c, h: h}, nil
	case <-h.closed:
		return nil, net.ErrClosed
	}
}

// Close stops handing connections to this server. It leaves the socket open.
func (h *handoff) Close() error {
	h.once.Do(func() {
		h.mu.Lock()
		h.isClosed = true
		if h.unclaimed == 0 {
			close(h.settled)
		}
		h.mu.Unlock()
		close(h.closed)
	})
	return nil
}

// Addr is the socket's address.
func (h *handoff) Addr() net.Addr { return h.sock.Addr() }

func (h *handoff) claim() {
	h.mu.Lock()
	h.unclaimed--
	if h.isClosed && h.unclaimed == 0 {
		close(h.settled)
	}
	h.mu.Unlock()
}

// settle waits, after Close, until the server has picked up every
// connection it accepted (at most claimWait).
//
// Why: grpc-go's Server.Serve hands each accepted connection to a goroutine
// whose first step is `if s.quit.HasFired() { rawConn.Close() }`, and whose
// second is rawConn.SetDeadline (server.go, handleRawConn, v1.85). Stopping
// the server in between would close a caller's fresh connection unserved.
// Once the connection has been touched, GracefulStop waits for its
// handshake (serveWG) and then drains it with a GOAWAY like every other.
func (h *handoff) settle() {
	t := time.NewTimer(claimWait)
	defer t.Stop()
	select {
	case <-h.settled:
	case <-t.C:
	}
}

// claimedConn tells its handoff when its server first uses it.
type claimedConn struct {
	net.Conn
	h    *handoff
	once sync.Once
}

func (c *claimedConn) claimed() { c.once.Do(c.h.claim) }

func (c *claimedConn) Read(b []byte) (int, error)  { c.claimed(); return c.Conn.Read(b) }
func (c *claimedConn) Write(b []byte) (int, error) { c.claimed(); return c.Conn.Write(b) }
func (c *claimedConn) Close() error                { c.claimed(); return c.Conn.Close() }

func (c *claimedConn) SetDeadline(t time.Time) error {
	c.claimed()
	return c.Conn.SetDeadline(t)
}

func (c *claimedConn) SetReadDeadline(t time.Time) error {
	c.claimed()
	return c.Conn.SetReadDeadline(t)
}

func (c *claimedConn) SetWriteDeadline(t time.Time) error {
	c.claimed()
	return c.Conn.SetWriteDeadline(t)
}
