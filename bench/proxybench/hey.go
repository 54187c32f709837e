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

// heyCrossCheck runs hey through each path of run that it can reach
// (-hey-duration; none when hey is not installed) and returns the
// cross-check table's rows.
func heyCrossCheck(run []target, o opts) []string {
	var heyRows []string
	if _, err := exec.LookPath("hey"); err == nil && o.heyDur > 0 {
		for _, t := range run {
			if t.tls != nil {
				heyRows = append(heyRows, fmt.Sprintf("| %s | n/a (needs a client certificate) | | |", t.name))
				continue
			}
			if isH2C(t.name) {
				continue // hey speaks HTTP/2 over TLS only
			}
			h := hey(t.url, o.heyDur, o.conns, o.rate)
			heyRows = append(heyRows, fmt.Sprintf("| %s | %s | %s | %s |", t.name, h.rps, h.p50, h.p99))
		}
	}
	return heyRows
}

// printHey prints the cross-check table, if it has rows.
func printHey(heyRows []string, o opts) {
	if len(heyRows) > 0 {
		fmt.Printf("\nCross-check with hey at the same rate, each path once: hey -z %v -c %d -q %d (its latencies count from each send, so a stall is not charged to the requests it delays):\n\n", o.heyDur, o.conns, o.rate/o.conns)
		fmt.Println("| path | requests/s | p50 ms | p99 ms |")
		fmt.Println("|---|---|---|---|")
		for _, l := range heyRows {
			fmt.Println(l)
		}
	}
}
