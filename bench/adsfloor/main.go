// Command adsfloor measures what the transport costs per ADS push: N
// connections, one ADS-like stream each; per round, a server process
// sends every stream one pre-encoded DiscoveryResponse (a route table
// in weft's shape, with the stream's own nonce) and each client ACKs it
// with a DiscoveryRequest carrying the version and nonce, which the
// server decodes and checks. The server is one of these modes, run in
// turn, as child processes of their own, so that their CPU is theirs:
//
//	grpc          grpc-go with weft's xDS listener's options, a minimal
//	              handler: the fan-out calls SendMsg, the stream's
//	              goroutine RecvMsg
//	grpc-shared   grpc with SharedWriteBuffer
//	grpc-nobuf    grpc with WriteBufferSize(0)
//	grpc-workers  grpc with NumStreamWorkers(GOMAXPROCS)
//	h2            h2ads: HTTP/2 on x/net/http2's Framer, the fan-out
//	              writing each push's DATA frame, the ACK handled on the
//	              connection's reader
//	tcp           the same bytes length-prefixed over plain TCP: one
//	              write per push, the ACK read by the connection's reader
//	tcp-handoff   tcp with grpc-go's two hand-offs: each push written by
//	              a writer goroutine of the connection, each ACK decoded
//	              on a goroutine of the stream
//
// The clients, in this process, are grpc-go dialled as weft proxy dials
// (fixed 16 MiB windows) for every mode but tcp. See docs/bench/xds.md
// (round 12).
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/weftmesh/weft/bench/internal/loadavg"
	"github.com/weftmesh/weft/internal/procstat"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "serve" {
		fs := flag.NewFlagSet("serve", flag.ExitOnError)
		mode := fs.String("mode", "grpc", "the server")
		n := fs.Int("n", 1000, "streams")
		workers := fs.Int("workers", runtime.GOMAXPROCS(0), "fan-out goroutines")
		prof := fs.String("cpuprofile", "", "write a CPU profile of the rounds here")
		fs.Parse(os.Args[2:])
		if err := serveChild(*mode, *n, *workers, *prof); err != nil {
			log.Fatal(err)
		}
		return
	}
	n := flag.Int("n", 1000, "connections, one stream each")
	rounds := flag.Int("rounds", 30, "rounds measured per run (after 3 of warm-up)")
	reps := flag.Int("reps", 1, "times each mode runs, alternated")
	modes := flag.String("modes", "grpc,h2,tcp,tcp-handoff,grpc-shared,grpc-nobuf,grpc-workers", "the servers, comma-separated, run in this order each rep")
	workers := flag.Int("workers", 2, "the server's fan-out goroutines")
	profile := flag.String("cpuprofile", "", "profile each mode's first run into this prefix + mode + .pprof")
	flag.Parse()
	log.SetFlags(log.Ltime)
	fmt.Println("| load (1 min) | mode | streams | p50 | p99 | max | fan-out sends p50 | server CPU / push / stream | clients CPU / push / stream | server syscalls r / w per push / stream | RSS MB |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|")
	profiled := map[string]bool{}
	for range *reps {
		for _, m := range strings.Split(*modes, ",") {
			prof := ""
			if *profile != "" && !profiled[m] {
				prof, profiled[m] = *profile+m+".pprof", true
			}
			row, err := run(m, *n, *rounds, *workers, prof)
			if err != nil {
				log.Fatalf("%s: %v", m, err)
			}
			fmt.Println(row)
		}
	}
}

// run measures one mode: it starts the server child, connects the
// clients, runs 3 rounds of warm-up and rounds measured, and returns the
// table's row.
func run(mode string, n, rounds, workers int, cpuprofile string) (string, error) {
	load := loadavg.String()
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	args := []string{"serve", "-mode", mode, "-n", fmt.Sprint(n), "-workers", fmt.Sprint(workers)}
	if cpuprofile != "" {
		args = append(args, "-cpuprofile", cpuprofile)
	}
	child := exec.Command(self, args...)
	child.Stderr = os.Stderr
	stdin, err := child.StdinPipe()
	if err != nil {
		return "", err
	}
	stdout, err := child.StdoutPipe()
	if err != nil {
		return "", err
	}
	if err := child.Start(); err != nil {
		return "", err
	}
	defer func() {
		stdin.Close()
		child.Wait()
	}()
	out := bufio.NewScanner(stdout)
	if !out.Scan() {
		return "", fmt.Errorf("server: no address")
	}
	addr := out.Text()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var closeClients func()
	if strings.HasPrefix(mode, "tcp") {
		closeClients, err = tcpClients(addr, n)
	} else {
		closeClients, err = grpcClients(ctx, addr, n)
	}
	if err != nil {
		return "", err
	}
	defer closeClients()
	if !out.Scan() || out.Text() != "ready" {
		return "", fmt.Errorf("server: not ready (%q)", out.Text())
	}
	type result struct {
		wall, sent, cpu time.Duration
		bad, errs       int64
	}
	round := func() (result, error) {
		var r result
		if _, err := fmt.Fprintln(stdin, "go"); err != nil {
			return r, err
		}
		if !out.Scan() {
			return r, fmt.Errorf("server ended mid-round")
		}
		_, err := fmt.Sscanf(out.Text(), "done %d %d %d %d %d", &r.wall, &r.sent, &r.cpu, &r.bad, &r.errs)
		return r, err
	}
	var first result
	for range 3 {
		if first, err = round(); err != nil {
			return "", err
		}
	}
	pid := child.Process.Pid
	self0 := selfCPU()
	r0, w0 := procstat.Syscalls(pid)
	var walls, sends []time.Duration
	last := first
	for range rounds {
		if last, err = round(); err != nil {
			return "", err
		}
		walls = append(walls, last.wall)
		sends = append(sends, last.sent)
	}
	self1 := selfCPU()
	r1, w1 := procstat.Syscalls(pid)
	rss, _ := procstat.RSS(pid)
	if last.bad > 0 || last.errs > 0 {
		return "", fmt.Errorf("%d requests were not the ACK expected, %d sends failed", last.bad, last.errs)
	}
	per := float64(rounds * n)
	slices.Sort(walls)
	slices.Sort(sends)
	return fmt.Sprintf("| %s | %s | %d | %s | %s | %s | %s | %.1f µs | %.1f µs | %.2f / %.2f | %d |",
		strings.Fields(load + " ?")[0], mode, n,
		ms(quantile(walls, 0.5)), ms(quantile(walls, 0.99)), ms(walls[len(walls)-1]), ms(quantile(sends, 0.5)),
		float64(last.cpu-first.cpu)/per/1e3, float64(self1-self0)/per/1e3,
		float64(r1-r0)/per, float64(w1-w0)/per, rss>>20), nil
}

// quantile is the q-quantile of sorted d, nearest rank.
func quantile(d []time.Duration, q float64) time.Duration {
	i := int(q*float64(len(d))+0.999999) - 1
	return d[max(0, min(i, len(d)-1))]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/1e6) }
