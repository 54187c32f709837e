package main

import (
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"time"

	"github.com/weftmesh/weft/bench/internal/loadavg"
)

type satResult struct{ rps, p50, p99 string }

var (
	reRPS = regexp.MustCompile(`Requests/sec:\s+([\d.]+)`)
	reP50 = regexp.MustCompile(`\s50%\s+(\S+)`)
	reP99 = regexp.MustCompile(`\s99%\s+(\S+)`)
)

func wrk(url string, d time.Duration, conns int) satResult {
	out, err := exec.Command("wrk", wrkArgs(url, d, conns)...).CombinedOutput()
	return parseWrk(out, err)
}

// wrkArgs are wrk's arguments for a saturation run.
func wrkArgs(url string, d time.Duration, conns int) []string {
	return []string{"-t2", "-c" + strconv.Itoa(conns), "-d" + strconv.Itoa(int(d.Seconds())) + "s", "--latency", url}
}

// parseWrk reads wrk's rate and p50/p99 from its output.
func parseWrk(out []byte, err error) satResult {
	if err != nil {
		return satResult{"wrk failed: " + err.Error(), "-", "-"}
	}
	get := func(re *regexp.Regexp) string {
		if m := re.FindSubmatch(out); m != nil {
			return string(m[1])
		}
		return "?"
	}
	return satResult{get(reRPS), get(reP50), get(reP99)}
}

// saturation runs wrk for d over conns connections through each HTTP/1.1
// path of run (h2load runs the HTTP/2 ones: h2c.go) and returns the
// saturation table's rows, each with the load average after its run, and
// into rps each path's requests/s.
func saturation(run []target, d time.Duration, conns int, rps map[string]float64) []string {
	var sat []string
	for _, t := range run {
		if isH2C(t.name) {
			continue // h2load's (h2cSaturation)
		}
		if t.tls != nil {
			sat = append(sat, fmt.Sprintf("| %s | n/a (wrk has no client certificate) | | | |", t.name))
			continue
		}
		s := wrk(t.url, d, conns)
		if v, err := strconv.ParseFloat(s.rps, 64); err == nil {
			rps[t.name] = v
		}
		sat = append(sat, fmt.Sprintf("| %s | %s | %s | %s | %s |", t.name, s.rps, s.p50, s.p99, loadavg.OneMinute()))
	}
	return sat
}

// printSaturation prints the saturation table, if it has rows.
func printSaturation(sat []string, d time.Duration, conns int) {
	if len(sat) > 0 {
		fmt.Printf("\nSaturation: wrk -t2 -c%d -d%v --latency:\n\n", conns, d)
		fmt.Println("| path | requests/s | p50 | p99 | load |")
		fmt.Println("|---|---|---|---|---|")
		for _, l := range sat {
			fmt.Println(l)
		}
	}
}
