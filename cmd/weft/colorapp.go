package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"

	"github.com/weftmesh/weft/internal/colorapp"
)

func runColorApp(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("weft colorapp", flag.ContinueOnError)
	fs.SetOutput(stderr)
	color := fs.String("color", envOr("COLOR", ""), "what / answers (env COLOR)")
	listen := fs.String("listen", envOr("WEFT_COLORAPP_LISTEN", ":80"), "listen address (env WEFT_COLORAPP_LISTEN)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *color == "" {
		return fmt.Errorf("set --color or COLOR")
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	return colorapp.Serve(ctx, ln, *color, slog.New(slog.NewTextHandler(stderr, nil)))
}
