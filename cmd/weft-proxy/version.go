package main

import (
	"fmt"
	"io"

	"github.com/weftmesh/weft/internal/buildinfo"
)

// Release builds stamp these at link time, as they stamp weft's
// (scripts/release.sh, the Dockerfile):
//
//	-ldflags "-X main.releaseVersion=v0.1.0 -X main.releaseCommit=<sha> -X main.releaseDate=<RFC 3339>"
//
// They are never written at run time.
var (
	releaseVersion string
	releaseCommit  string
	releaseDate    string
)

// runVersion prints what `weft version` prints, for weft-proxy.
func runVersion(args []string, stdout, stderr io.Writer) error {
	if len(args) == 1 && (args[0] == "-h" || args[0] == "--help") {
		fmt.Fprintln(stdout, "usage: weft-proxy version\n\nPrints weft-proxy's version, the commit and date it was built from, and the Go toolchain.")
		return nil
	}
	if len(args) > 0 {
		fmt.Fprintf(stderr, "weft-proxy version: unexpected arguments %q\n", args)
		return errUsage
	}
	_, err := io.WriteString(stdout, buildinfo.Read(buildinfo.Stamp{Version: releaseVersion, Commit: releaseCommit, Date: releaseDate}).Format("weft-proxy"))
	return err
}
