package translate

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestPureImports keeps the translator pure: no I/O, no clock, no
// randomness, nothing from the store or the server side.
func TestPureImports(t *testing.T) {
	forbidden := []string{"net", "net/", "os", "os/", "time", "math/rand", "crypto/rand", "syscall", "io/fs",
		"github.com/weftmesh/weft/internal/store", "github.com/weftmesh/weft/internal/server",
		"github.com/weftmesh/weft/internal/xds/server", "github.com/weftmesh/weft/internal/api"}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range af.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			for _, bad := range forbidden {
				if path == bad || strings.HasSuffix(bad, "/") && strings.HasPrefix(path, bad) || strings.HasPrefix(path, bad+"/") {
					t.Errorf("%s imports %s", f, path)
				}
			}
		}
	}
}
