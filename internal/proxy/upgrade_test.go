package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// TestWebSocketUpgrade: an HTTP/1.1 upgrade passes through and the
// connection then carries raw bytes both ways, as App Mesh's
// upgrade_configs websocket allows.
func TestWebSocketUpgrade(t *testing.T) {
	h := newHarness(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			http.Error(w, "no upgrade", 400)
			return
		}
		c, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		fmt.Fprint(rw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		_ = rw.Flush()
		_, _ = io.Copy(c, rw) // echo until the client closes
	}))
	t.Cleanup(srv.Close)
	r := routeTo("/", "ws")
	r.GetRoute().Timeout = durationpb.New(0)
	h.push(
		httpListener("egress", httpManager("egress", "rds", func(m *hcmv3.HttpConnectionManager) {
			m.UpgradeConfigs = []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket"}}
		})),
		routeConfig("rds", vhost("v", []string{"*"}, r)),
		edsCluster("ws"), cla("ws", strings.TrimPrefix(srv.URL, "http://")))
	c, err := net.Dial("tcp", h.addr("egress"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprint(c, "GET /chat HTTP/1.1\r\nHost: ws.local\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	fmt.Fprint(c, "frame-1\n")
	line, err := br.ReadString('\n')
	if err != nil || line != "frame-1\n" {
		t.Fatalf("echo after upgrade: %q %v", line, err)
	}

	// Without upgrade_configs the upgrade is refused, as Envoy does.
	h.push(
		httpListener("egress", httpManager("egress", "rds")),
		routeConfig("rds", vhost("v", []string{"*"}, r)),
		edsCluster("ws"), cla("ws", strings.TrimPrefix(srv.URL, "http://")))
	c2, err := net.Dial("tcp", h.addr("egress"))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	_ = c2.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprint(c2, "GET /chat HTTP/1.1\r\nHost: ws.local\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	resp, err = http.ReadResponse(bufio.NewReader(c2), nil)
	if err != nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("upgrade without upgrade_configs: %v %v", resp, err)
	}
}
