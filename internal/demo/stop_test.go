package demo

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/netns"
	"github.com/weftmesh/weft/internal/netns/netnstest"
	"github.com/weftmesh/weft/internal/weftbin"
)

// demoRun is one weft demo started by a test, its stdout read line by line.
type demoRun struct {
	pid   int
	lines *bufio.Reader
	out   io.ReadCloser
	cmd   *exec.Cmd // the demo, or the shell that is its parent
}

// startDemo starts `weft demo` in the netns layout, with TMPDIR set to
// tmp, directly or (underParent) as the child of a shell, and reads its
// output until the split is being shown.
func startDemo(t *testing.T, ctx context.Context, bin, tmp string, underParent bool) *demoRun {
	t.Helper()
	var cmd *exec.Cmd
	if underParent {
		// The shell prints the demo's pid, then waits for it.
		cmd = exec.CommandContext(ctx, "sh", "-c", `"$0" demo --layout netns & echo "pid $!"; wait`, bin)
	} else {
		cmd = exec.CommandContext(ctx, bin, "demo", "--layout", "netns")
	}
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &demoRun{pid: cmd.Process.Pid, lines: bufio.NewReader(out), out: out, cmd: cmd}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	var seen []string
	for {
		line, err := r.lines.ReadString('\n')
		if err != nil {
			t.Fatalf("weft demo ended before showing the split: %v\n%s\nstderr:\n%s", err, strings.Join(seen, ""), stderr.String())
		}
		seen = append(seen, line)
		if p, ok := strings.CutPrefix(line, "pid "); ok {
			r.pid, _ = strconv.Atoi(strings.TrimSpace(p))
		}
		if strings.HasPrefix(line, "split: ") {
			return r
		}
	}
}

// drain reads the demo's output to its end: the demo has exited (its
// children write to files of their own).
func (r *demoRun) drain(t *testing.T) string {
	t.Helper()
	b, err := io.ReadAll(r.lines)
	if err != nil {
		t.Fatalf("read the demo's output: %v", err)
	}
	return string(b)
}

// leftovers lists what a demo with that pid and binary left: processes
// running the binary, its namespaces and links, files in tmp.
func leftovers(ctx context.Context, bin string, pid int, tmp string) []string {
	var left []string
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if b, err := os.ReadFile(p); err == nil && bytes.Contains(b, []byte(bin)) {
			left = append(left, "process "+filepath.Base(filepath.Dir(p))+": "+strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	left = append(left, netns.Remaining(ctx, netns.Prefix(netnsFamily, pid))...)
	entries, _ := os.ReadDir(tmp)
	for _, e := range entries {
		left = append(left, filepath.Join(tmp, e.Name()))
	}
	return left
}

// demoTempDir is a TMPDIR for one demo that the proxies (UID 1337) can
// traverse, removed when the test ends.
func demoTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "weft-demo-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestDemoStops: however a running demo is told to stop (a closed
// terminal's SIGHUP, a closed pipe's SIGPIPE, its parent killed with
// SIGKILL), it stops every process it started and removes its namespaces,
// links, temporary directory and lock file.
func TestDemoStops(t *testing.T) {
	netnstest.Require(t, "iptables", "iptables-restore", "setpriv")
	bin := weftbin.Build(t)
	for _, how := range []string{"SIGHUP", "SIGPIPE", "parent SIGKILL"} {
		t.Run(how, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			tmp := demoTempDir(t)
			r := startDemo(t, ctx, bin, tmp, how == "parent SIGKILL")
			if left := leftovers(ctx, bin, r.pid, tmp); len(left) == 0 {
				t.Fatal("a running demo shows nothing: the check would prove nothing")
			}
			switch how {
			case "SIGHUP":
				r.cmd.Process.Signal(syscall.SIGHUP)
				r.drain(t)
			case "SIGPIPE":
				// As `weft demo | head`: the reader goes away.
				r.out.Close()
			case "parent SIGKILL":
				r.cmd.Process.Kill()
				r.drain(t)
			}
			err := r.cmd.Wait()
			if how == "SIGHUP" && err != nil {
				t.Errorf("weft demo after SIGHUP: %v", err)
			}
			if how != "parent SIGKILL" {
				// The demo itself was the child: Wait saw it exit.
			} else {
				waitGone(ctx, r.pid, time.Minute)
			}
			if left := leftovers(ctx, bin, r.pid, tmp); len(left) > 0 {
				t.Errorf("weft demo stopped by %s left:\n%s", how, strings.Join(left, "\n"))
			}
		})
	}
}

// TestDemoAfterKilledDemo: a demo killed outright (SIGKILL) leaves its
// processes, namespaces and files; the next demo removes them and runs.
func TestDemoAfterKilledDemo(t *testing.T) {
	netnstest.Require(t, "iptables", "iptables-restore", "setpriv")
	bin := weftbin.Build(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	tmp := demoTempDir(t)
	first := startDemo(t, ctx, bin, tmp, false)
	b, err := os.ReadFile(filepath.Join(tmp, "weft-demo-"+strconv.Itoa(first.pid)+".lock"))
	if err != nil {
		t.Fatalf("the running demo's lock file: %v", err)
	}
	var st lockState
	if err := json.Unmarshal(b, &st); err != nil || len(st.Children) == 0 || st.Pid != first.pid {
		t.Fatalf("lock file %s: %v", b, err)
	}
	first.cmd.Process.Kill()
	first.cmd.Wait()
	if left := leftovers(ctx, bin, first.pid, tmp); len(left) == 0 {
		t.Fatal("a demo killed with SIGKILL left nothing: the sweep is not tested")
	}
	second := startDemo(t, ctx, bin, tmp, false)
	// The first demo's children, namespaces, directory and lock file are
	// gone; the second demo's own are there.
	for _, pid := range st.Children {
		if runs(pid, bin) {
			t.Errorf("the first demo's child %d still runs", pid)
		}
	}
	if left := netns.Remaining(ctx, netns.Prefix(netnsFamily, first.pid)); len(left) > 0 {
		t.Errorf("the first demo's namespaces and links remain: %v", left)
	}
	for _, p := range []string{st.Dir, filepath.Join(tmp, "weft-demo-"+strconv.Itoa(first.pid)+".lock")} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("the first demo's %s remains", p)
		}
	}
	second.cmd.Process.Signal(syscall.SIGTERM)
	second.drain(t)
	if err := second.cmd.Wait(); err != nil {
		t.Errorf("second demo: %v", err)
	}
	if left := leftovers(ctx, bin, first.pid, tmp); len(left) > 0 {
		t.Errorf("after both demos:\n%s", strings.Join(left, "\n"))
	}
}

// TestDemoFollowsWeightChange runs the update-route command the demo
// prints, as printed (weights 1:1), with the AWS CLI while the demo runs:
// the route line changes and the split moves from about 80/20 to about
// 50/50.
func TestDemoFollowsWeightChange(t *testing.T) {
	netnstest.Require(t, "iptables", "iptables-restore", "setpriv")
	if _, err := exec.LookPath("aws"); err != nil {
		if os.Getenv("WEFT_CI") == "1" {
			t.Fatal("the AWS CLI (aws) is not on PATH")
		}
		t.Skip("the AWS CLI (aws) is not on PATH")
	}
	bin := weftbin.Build(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tmp := demoTempDir(t)
	cmd := exec.CommandContext(ctx, bin, "demo", "--layout", "netns")
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		io.Copy(io.Discard, out)
		cmd.Wait()
	}()
	lines := bufio.NewScanner(out)
	next := func(what string) string {
		t.Helper()
		if !lines.Scan() {
			t.Fatalf("the demo ended while waiting for %s: %v\n%s", what, lines.Err(), stderr.String())
		}
		return lines.Text()
	}
	var update string
	for update == "" {
		if l := strings.TrimSpace(next("the update-route command")); strings.HasPrefix(l, "AWS_ACCESS_KEY_ID=") && strings.Contains(l, "aws appmesh update-route") {
			update = l
		}
	}
	for l := next("the route"); l != "color-route: green weight 4, yellow weight 1 (80% / 20%)"; l = next("the route") {
	}
	// The split under 4:1 first, so that the change below is a change.
	for l := next("a split"); !strings.HasPrefix(l, "split: green"); l = next("a split") {
	}
	if b, err := exec.CommandContext(ctx, "sh", "-c", update).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", update, err, b)
	}
	for l := next("the new route"); l != "color-route: green weight 1, yellow weight 1 (50% / 50%)"; l = next("the new route") {
	}
	// Once the last 200 requests are all after the change, green's share
	// is about 50 %: under 4:1 it is 80 % ± 3 (one standard deviation).
	for {
		l := next("a 1:1 split")
		var green float64
		if _, err := fmt.Sscanf(l, "split: green %f%%", &green); err == nil && green > 30 && green < 65 {
			return
		}
	}
}

// TestPortInUseNamesIt: a port the demo cannot move that something else
// holds is reported by number.
func TestPortInUseNamesIt(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	err = portFree(port)
	if err == nil || !strings.Contains(err.Error(), "port "+strconv.Itoa(port)+" is in use") {
		t.Fatalf("portFree(%d) with the port held: %v", port, err)
	}
	ln.Close()
	if err := portFree(port); err != nil {
		t.Errorf("portFree(%d) once released: %v", port, err)
	}
}
