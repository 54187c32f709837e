package main

import (
	"context"
	"io"
	"time"

	"github.com/weftmesh/weft/internal/envvar"
	"github.com/weftmesh/weft/internal/proxycmd"
)

// runProxy is `weft proxy`; cmd/weft-proxy runs the same command.
func runProxy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return proxycmd.Run(ctx, "weft proxy", args, stdout, stderr)
}

// envDuration is envInt for durations ("10s").
func envDuration(name string, def time.Duration, errs *[]error) time.Duration {
	return envvar.Duration(name, def, errs)
}
