package main

import (
	"os/exec"
	"regexp"
	"strconv"
	"time"
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
