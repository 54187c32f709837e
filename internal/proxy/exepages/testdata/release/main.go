// Command release calls exepages.Release and then runs code and reads data
// whose pages it released: the test builds it as a plain and as a
// position-independent executable.
package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/weftmesh/weft/internal/proxy/exepages"
)

func main() {
	n, err := exepages.Release()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Touch code and read-only data again after the release.
	fmt.Println(strings.Repeat("ok ", 2), n)
}
