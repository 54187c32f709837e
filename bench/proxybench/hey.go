package main

import (
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"time"
)

var (
	reHeyRPS = regexp.MustCompile(`Requests/sec:\s+([\d.]+)`)
	reHeyP50 = regexp.MustCompile(`50% in ([\d.]+) secs`)
	reHeyP99 = regexp.MustCompile(`99% in ([\d.]+) secs`)
)

// hey runs Debian's hey at rate requests/s over conns connections (-q is
// per connection) and returns its rate and p50/p99 in milliseconds.
func hey(url string, d time.Duration, conns, rate int) satResult {
	out, err := exec.Command("hey", "-z", d.String(), "-c", strconv.Itoa(conns), "-q", strconv.Itoa(rate/conns), "-disable-compression", url).CombinedOutput()
	if err != nil {
		return satResult{"hey failed: " + err.Error(), "-", "-"}
	}
	get := func(re *regexp.Regexp, ms bool) string {
		m := re.FindSubmatch(out)
		if m == nil {
			return "?"
		}
		if !ms {
			return string(m[1])
		}
		v, _ := strconv.ParseFloat(string(m[1]), 64)
		return fmt.Sprintf("%.3f", v*1000)
	}
	return satResult{get(reHeyRPS, false), get(reHeyP50, true), get(reHeyP99, true)}
}
