package sds

import (
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// TestListenerAdvertisesTheStreamLimit: the gRPC server built with
// ServerOptions tells every HTTP/2 client, in its first SETTINGS frame, how
// many streams one connection may hold — enforced by HTTP/2 itself before
// any handler runs.
func TestListenerAdvertisesTheStreamLimit(t *testing.T) {
	s := newStack(t, billingYAML, stackOpts{})
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(recvTimeout)) // a failure guard
	if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	f, err := fr.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	settings, ok := f.(*http2.SettingsFrame)
	if !ok {
		t.Fatalf("first frame %T, want SETTINGS", f)
	}
	if v, ok := settings.Value(http2.SettingMaxConcurrentStreams); !ok || v != MaxStreamsPerConnection {
		t.Fatalf("SETTINGS_MAX_CONCURRENT_STREAMS = %d (set: %v), want %d", v, ok, MaxStreamsPerConnection)
	}
}
