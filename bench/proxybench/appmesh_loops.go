//go:build linux

package main

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
)

// Whether a sidecar's listeners were on its event loops: weft proxy logs,
// at info, "listener on the event loops" or "listener stays off the event
// loops" with the reason, each time it builds a listener from xDS; the
// last line for a listener is how it serves now. Its admin /stats shows how
// many requests each connection manager served (the loops count under the
// same names), and any stat of the loops' own.

// placement is where one listener serves.
type placement struct {
	listener string
	loops    bool
	why      string // when not on the loops
}

// loopPlacement reads weft proxy's log (log/slog's text format) and
// returns the last placement logged for each listener, sorted by name.
func loopPlacement(log string) []placement {
	last := map[string]placement{}
	for _, line := range strings.Split(log, "\n") {
		kv := slogFields(line)
		var p placement
		switch kv["msg"] {
		case "listener on the event loops":
			p = placement{listener: kv["listener"], loops: true}
		case "listener stays off the event loops":
			p = placement{listener: kv["listener"], why: kv["why"]}
		default:
			continue
		}
		last[p.listener] = p
	}
	out := make([]placement, 0, len(last))
	for _, p := range last {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].listener < out[j].listener })
	return out
}

// slogFields splits one log/slog text line into its key=value pairs;
// quoted values are unquoted. A line that is not slog's gives what it can.
func slogFields(line string) map[string]string {
	kv := map[string]string{}
	for line != "" {
		line = strings.TrimLeft(line, " ")
		k, rest, ok := strings.Cut(line, "=")
		if !ok || strings.ContainsAny(k, " \"") {
			return kv
		}
		if strings.HasPrefix(rest, `"`) {
			q, err := strconv.QuotedPrefix(rest)
			if err != nil {
				return kv
			}
			kv[k], _ = strconv.Unquote(q)
			line = rest[len(q):]
			continue
		}
		v, after, _ := strings.Cut(rest, " ")
		kv[k] = v
		line = after
	}
	return kv
}

// servedStats keeps, of admin /stats' "name: value" lines, the requests
// each connection manager and cluster served, the listeners' connections
// that matched no chain, and any stat whose name mentions the loops.
func servedStats(body string) []string {
	var out []string
	for _, line := range strings.Split(body, "\n") {
		name, _, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		if (strings.HasPrefix(name, "http.") && strings.HasSuffix(name, ".downstream_rq_total")) ||
			(strings.HasPrefix(name, "cluster.") && strings.HasSuffix(name, ".upstream_rq_total")) ||
			strings.HasSuffix(name, ".no_filter_chain_match") || strings.Contains(name, "loop") {
			out = append(out, strings.TrimSpace(line))
		}
	}
	return out
}

// statValue is the value of the stat name in admin /stats' "name: value"
// lines, or -1 when it is not there.
func statValue(body, name string) int64 {
	for _, line := range strings.Split(body, "\n") {
		if n, v, ok := strings.Cut(line, ": "); ok && n == name {
			if x, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
				return x
			}
		}
	}
	return -1
}

// printPlacement prints a sidecar's listeners' placement and its served
// stats.
func printPlacement(name string, t task) {
	b, err := os.ReadFile(t.log)
	if err != nil {
		fmt.Printf("\n%s's sidecar: %v\n", name, err)
		return
	}
	fmt.Printf("\n%s's sidecar (pid %d), its listeners:\n\n", name, t.proxy.Pid)
	ps := loopPlacement(string(b))
	if len(ps) == 0 {
		fmt.Println("- none logged (the loops off: --evloop=false)")
	}
	for _, p := range ps {
		if p.loops {
			fmt.Printf("- %s: on the event loops\n", p.listener)
		} else {
			fmt.Printf("- %s: off the loops (%s)\n", p.listener, p.why)
		}
	}
	code, body, err := nsGet(context.Background(), t.host, "", "http://"+mbAdmin+"/stats")
	if err != nil || code != 200 {
		fmt.Printf("admin /stats: %d %v\n", code, err)
		return
	}
	fmt.Printf("\nadmin /stats: %s\n", strings.Join(servedStats(body), "; "))
}
