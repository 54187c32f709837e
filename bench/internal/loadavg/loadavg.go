// Package loadavg reads the machine's load averages for the benchmarks'
// reports: the other work competing for the cores while they ran.
package loadavg

import (
	"os"
	"strings"
)

// path is Linux's load average file.
const path = "/proc/loadavg"

// String returns the 1, 5 and 15 minute load averages separated by
// spaces, as /proc/loadavg gives them, or "?" when they cannot be read.
func String() string {
	return parse(os.ReadFile(path))
}

// OneMinute returns the 1 minute load average, as /proc/loadavg gives
// it, or "?" when it cannot be read.
func OneMinute() string {
	return oneMinute(String())
}

// oneMinute is the first of String's three averages ("?" stays "?").
func oneMinute(all string) string {
	first, _, _ := strings.Cut(all, " ")
	return first
}

func parse(b []byte, err error) string {
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
