package buildinfo

import (
	"runtime"
	"strings"
	"testing"
)

// TestStampWins: a release's stamp replaces what the go command recorded,
// field by field; the toolchain and platform are always the running ones.
func TestStampWins(t *testing.T) {
	got := Read(Stamp{Version: "v1.2.3", Commit: "abc", Date: "2026-12-03T00:00:00Z"}).Format("weft-proxy")
	want := "weft-proxy v1.2.3\ncommit abc\ndate   2026-12-03T00:00:00Z\ngo     " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + "\n"
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	if v := Read(Stamp{}); v.Version == "" || v.Go != runtime.Version() {
		t.Errorf("unstamped: %+v", v)
	}
	if s := (Info{Version: "(devel)", Modified: true}).Format("weft"); !strings.Contains(s, "commit unknown (modified)\n") || !strings.Contains(s, "date   unknown\n") {
		t.Errorf("modified, no VCS stamp: %q", s)
	}
}
