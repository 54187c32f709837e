package httpconn

import (
	"context"
	"log/slog"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/weftmesh/weft/internal/proxy/listener"
	"github.com/weftmesh/weft/internal/proxy/stats"
)

// TestH2EndConnBeforeShared: serveH2 wraps the connection (h2EndConn)
// before anything another goroutine runs may touch it: shutdown's close
// (the base context's AfterFunc, here due at once), the server's tracking.
// Wrapped after them, the close read the connection's field as it was
// written (-race).
func TestH2EndConnBeforeShared(t *testing.T) {
	m, err := Build(&hcmv3.HttpConnectionManager{StatPrefix: "p",
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{}},
		HttpFilters:    []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router"}}}, "hcm", Deps{Stats: stats.NewStore()})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		s := NewServer(slog.New(slog.DiscardHandler), Options{})
		s.cancelBase() // shutdown's last step: a connection served now is closed at once
		srv, _ := tcpPair(t)
		done := make(chan struct{})
		go func() { // ends when the closed connection's read fails
			defer close(done)
			s.serveH2(context.Background(), &listener.Conn{Conn: srv, CountedCx: true}, m)
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("serveH2 did not return after shutdown closed its connection")
		}
	}
}
