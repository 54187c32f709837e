package main

import (
	"context"
	"io"

	"github.com/weftmesh/weft/internal/envvar"
	"github.com/weftmesh/weft/internal/proxycmd"
)

// runIntercept is `weft intercept`; weft-proxy runs the same command.
func runIntercept(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return proxycmd.Intercept(ctx, "weft intercept", args, stdout, stderr)
}

// envInt is envOr for integers. A malformed value is added to errs rather
// than dropped, so the command can refuse to run on it.
func envInt(name string, def int, errs *[]error) int {
	return envvar.Int(name, def, errs)
}
