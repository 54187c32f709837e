package colorapp

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
)

func TestColorApp(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, "red", slog.New(slog.DiscardHandler)) }()
	base := "http://" + ln.Addr().String()

	tests := []struct {
		path     string
		wantCode int
		wantBody string
	}{
		{"/", 200, "red"},
		{"/healthcheck", 200, "hi"},
		{"/router", 200, "red"}, // a gateway that did not rewrite still gets the color
	}
	// HTTP/1.1, and h2c with prior knowledge (an http2 listener's app).
	h2c := &http.Transport{Protocols: new(http.Protocols)}
	h2c.Protocols.SetUnencryptedHTTP2(true)
	defer h2c.CloseIdleConnections()
	clients := []struct {
		name    string
		c       *http.Client
		wantPro int
	}{{"HTTP/1.1", http.DefaultClient, 1}, {"h2c", &http.Client{Transport: h2c}, 2}}
	for _, cl := range clients {
		for _, tt := range tests {
			t.Run(cl.name+tt.path, func(t *testing.T) {
				resp, err := cl.c.Get(base + tt.path)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				body, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != tt.wantCode || string(body) != tt.wantBody || resp.ProtoMajor != cl.wantPro {
					t.Errorf("GET %s = %s %d %q, want HTTP/%d %d %q", tt.path, resp.Proto, resp.StatusCode, body, cl.wantPro, tt.wantCode, tt.wantBody)
				}
			})
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve after cancel: %v", err)
	}
	if _, err := http.Get(base + "/"); err == nil {
		t.Error("still answering after Serve returned")
	}
}
