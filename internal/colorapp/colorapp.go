// Package colorapp is the tutorial's application: an HTTP server whose root
// path answers with its color and whose /healthcheck answers 200 "hi". The
// end-to-end test and weft demo run it behind weft proxies, as the tutorial
// runs the forsakenidol/colorapp image behind Envoy.
package colorapp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// Handler answers "/" with color and "/healthcheck" with "hi". Every other
// path is the root path too, as in the image, so that a gateway that does
// not rewrite a prefix still gets the color.
func Handler(color string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthcheck", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprint(w, "hi")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprint(w, color)
	})
	return mux
}

// Serve answers on ln until ctx ends, then stops accepting and waits up to
// a few seconds for requests in flight. It closes ln. It speaks HTTP/1.1
// and HTTP/2 without TLS (h2c with prior knowledge), so that it can stand
// behind a virtual node listener of protocol http2 or grpc as well.
func Serve(ctx context.Context, ln net.Listener, color string, log *slog.Logger) error {
	srv := &http.Server{Handler: Handler(color), ReadHeaderTimeout: 10 * time.Second, Protocols: new(http.Protocols)}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }() // ends with Shutdown below
	log.Info("color app listening", "addr", ln.Addr().String(), "color", color)
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
