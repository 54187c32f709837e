// Package buildinfo says which build a binary is: the version, commit and
// date a release stamped into it at link time, else what the go command
// recorded (module version, VCS stamp), and the toolchain. weft and
// weft-proxy print it the same way (`weft version`, `weft-proxy version`).
package buildinfo

import (
	"cmp"
	"fmt"
	"runtime"
	"runtime/debug"
)

// Stamp is what scripts/release.sh writes into a binary's main package at
// link time:
//
//	-ldflags "-X main.releaseVersion=v0.1.0 -X main.releaseCommit=<sha> -X main.releaseDate=<RFC 3339>"
//
// Each command passes its own; an empty field falls back to the build
// information.
type Stamp struct {
	Version, Commit, Date string
}

// Info is what a version command reports.
type Info struct {
	Version  string // module version: v1.2.3 from go install @v1.2.3, or (devel)
	Commit   string // VCS revision
	Modified bool   // built from a tree with uncommitted changes
	Date     string // commit time (go build) or the release's date
	Go       string // toolchain
	Platform string // GOOS/GOARCH
}

// Read combines the link-time stamp with the binary's build information;
// the stamp wins where both say something.
func Read(s Stamp) Info {
	v := Info{Version: "(devel)", Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			v.Version = bi.Main.Version
		}
		for _, kv := range bi.Settings {
			switch kv.Key {
			case "vcs.revision":
				v.Commit = kv.Value
			case "vcs.time":
				v.Date = kv.Value
			case "vcs.modified":
				v.Modified = kv.Value == "true"
			}
		}
	}
	v.Version = cmp.Or(s.Version, v.Version)
	v.Commit = cmp.Or(s.Commit, v.Commit)
	v.Date = cmp.Or(s.Date, v.Date)
	return v
}

// Format prints v for the named program, one field a line:
//
//	weft v0.1.0
//	commit 0123abc…
//	date   2026-12-03T10:00:00Z
//	go     go1.26.8 linux/amd64
func (v Info) Format(program string) string {
	commit := cmp.Or(v.Commit, "unknown")
	if v.Modified {
		commit += " (modified)"
	}
	return fmt.Sprintf("%s %s\ncommit %s\ndate   %s\ngo     %s %s\n", program, v.Version, commit, cmp.Or(v.Date, "unknown"), v.Go, v.Platform)
}
