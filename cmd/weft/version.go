package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// Release builds stamp these at link time (scripts/release.sh):
//
//	-ldflags "-X main.releaseVersion=v0.1.0 -X main.releaseCommit=<sha> -X main.releaseDate=<RFC 3339>"
//
// They are never written at run time. Unset, `weft version` reads the
// module version and the VCS stamp the go command records.
var (
	releaseVersion string
	releaseCommit  string
	releaseDate    string
)

// buildVersion is what `weft version` reports.
type buildVersion struct {
	Version  string // module version: v1.2.3 from go install @v1.2.3, or (devel)
	Commit   string // VCS revision
	Modified bool   // built from a tree with uncommitted changes
	Date     string // commit time (go build) or the release's date
	Go       string // toolchain
	Platform string // GOOS/GOARCH
}

// readBuildVersion combines the link-time stamp with the binary's build
// information; the stamp wins where both say something.
func readBuildVersion() buildVersion {
	v := buildVersion{Version: "(devel)", Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			v.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				v.Commit = s.Value
			case "vcs.time":
				v.Date = s.Value
			case "vcs.modified":
				v.Modified = s.Value == "true"
			}
		}
	}
	v.Version = cmp.Or(releaseVersion, v.Version)
	v.Commit = cmp.Or(releaseCommit, v.Commit)
	v.Date = cmp.Or(releaseDate, v.Date)
	return v
}

func (v buildVersion) String() string {
	commit := cmp.Or(v.Commit, "unknown")
	if v.Modified {
		commit += " (modified)"
	}
	return fmt.Sprintf("weft %s\ncommit %s\ndate   %s\ngo     %s %s\n", v.Version, commit, cmp.Or(v.Date, "unknown"), v.Go, v.Platform)
}

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
	_, err := io.WriteString(stdout, readBuildVersion().String())
	return err
}
