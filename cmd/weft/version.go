package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/weftmesh/weft/internal/buildinfo"
)

// Release builds stamp these at link time (scripts/release.sh):
//
//	-ldflags "-X main.releaseVersion=v0.1.0 -X main.releaseCommit=<sha> -X main.releaseDate=<RFC 3339>"
//
// They are never written at run time. Unset, `weft version` reads the
// module version and the VCS stamp the go command records (buildinfo).
var (
	releaseVersion string
	releaseCommit  string
	releaseDate    string
)

func runVersion(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("weft version", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: weft version\n\nPrints weft's version, the commit and date it was built from, and the Go toolchain.")
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	_, err := io.WriteString(stdout, buildinfo.Read(buildinfo.Stamp{Version: releaseVersion, Commit: releaseCommit, Date: releaseDate}).Format("weft"))
	return err
}
