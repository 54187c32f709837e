package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/netns"
)

// world is the running tutorial: the lab network, the control plane and the
// tasks, plus what the AWS CLI returned that later steps need.
type world struct {
	t       *testing.T
	lab     *netns.Lab
	weft    string // the weft binary, executable by the proxy's UID
	tmp     string // files the test writes: JSON inputs, logs
	ctl     *netns.Host
	laptop  *netns.Host // the tutorial reader's machine, from section 4 on
	api     string      // http://ctl:port
	xds     string      // ctl:port
	region  string
	account string

	namespaceID string            // the Cloud Map namespace
	services    map[string]string // Cloud Map service name -> id
	tasks       map[string]*task  // by ECS task name (red, blue, ..., gateway-1)
}

// task is one ECS task: a namespace with a proxy and, for a virtual node, an
// app.
type task struct {
	name    string
	host    *netns.Host
	id      string // ECS task id, which is the Cloud Map instance id
	proxy   *proc
	app     *proc
	logPath string // the proxy's stdout: where /dev/stdout access logs go
}

// proc is a process the test started; stop ends it.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when Wait returned
	err  error         // Wait's result, valid after done
	tail *tailBuffer   // last lines of stderr, for failure reports
}

// start runs argv inside h as uid (-1: root), stdout to the file at stdout
// ("" discards), and registers a cleanup that stops it.
func (w *world) start(name string, h *netns.Host, uid int, env []string, stdout string, argv ...string) *proc {
	w.t.Helper()
	cmd := h.Command(context.Background(), uid, argv...)
	cmd.Env = append(os.Environ(), env...)
	if stdout != "" {
		f, err := os.OpenFile(stdout, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			w.t.Fatal(err)
		}
		defer f.Close() // the child has its own copy
		if uid >= 0 {
			// The proxy may reopen /dev/stdout by path, as Envoy
			// does, so the file must be its own.
			if err := f.Chown(uid, uid); err != nil {
				w.t.Fatal(err)
			}
		}
		cmd.Stdout = f
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{}), tail: &tailBuffer{max: 40}}
	cmd.Stderr = p.tail
	// WEFT_E2E_LOGDIR keeps every process's whole stderr there, the
	// proxies' at debug level, to line a failure up with their logs.
	if d := os.Getenv("WEFT_E2E_LOGDIR"); d != "" {
		f, err := os.Create(filepath.Join(d, name+".stderr"))
		if err == nil {
			cmd.Stderr = io.MultiWriter(p.tail, f)
			cmd.Env = append(cmd.Env, "ENVOY_LOG_LEVEL=debug")
		}
	}
	if err := cmd.Start(); err != nil {
		w.t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }() // ends when the process does; stop makes sure it does
	w.t.Cleanup(func() {
		p.stop()
		if w.t.Failed() {
			w.t.Logf("--- last stderr lines of %s (exit: %v):\n%s", name, p.err, p.tail.String())
		}
	})
	return p
}

// stop sends SIGTERM, waits up to 5 s, then SIGKILL. ip netns exec and
// setpriv exec the command, so the signal reaches it directly.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// exited reports whether the process has ended, and how.
func (p *proc) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// tailBuffer keeps the last max lines written to it.
type tailBuffer struct {
	mu    sync.Mutex
	max   int
	lines []string
	part  []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.part = append(b.part, p...)
	for {
		i := bytes.IndexByte(b.part, '\n')
		if i < 0 {
			break
		}
		b.lines = append(b.lines, string(b.part[:i]))
		b.part = b.part[i+1:]
		if len(b.lines) > b.max {
			b.lines = b.lines[len(b.lines)-b.max:]
		}
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Join(append(b.lines, string(b.part)), "\n")
}

// run runs argv inside h as root and returns stdout, stderr and the error.
func run(ctx context.Context, h *netns.Host, argv ...string) (string, string, error) {
	cmd := h.Command(ctx, -1, argv...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// waitFor polls cond until it reports true or the deadline passes; cond's
// last error explains a timeout. The pause between polls is what keeps this
// from spinning, not a guess at how long something takes.
func waitFor(t *testing.T, what string, within time.Duration, cond func() (bool, error)) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(within)
	var last error
	for {
		ok, err := cond()
		if ok {
			return time.Since(start)
		}
		last = err
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s (last: %v)", what, within, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// taskDefinition is what the test reads from an ECS task definition.
type taskDefinition struct {
	Family               string
	ContainerDefinitions []struct {
		Name         string
		User         string
		PortMappings []struct{ ContainerPort int }
		Environment  []struct{ Name, Value string }
	}
	ProxyConfiguration *struct {
		Type          string
		ContainerName string
		Properties    []struct{ Name, Value string }
	}
}

func readTaskDefinition(t *testing.T, name string) taskDefinition {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "tutorial", "testdata", "ecs", name))
	if err != nil {
		t.Fatal(err)
	}
	var td taskDefinition
	if err := json.Unmarshal(b, &td); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return td
}

// env returns container c's environment variable, or "".
func (td taskDefinition) env(container, name string) string {
	for _, c := range td.ContainerDefinitions {
		if c.Name != container {
			continue
		}
		for _, e := range c.Environment {
			if e.Name == name {
				return e.Value
			}
		}
	}
	return ""
}

// proxyProperty returns a proxyConfiguration property, or "".
func (td taskDefinition) proxyProperty(name string) string {
	if td.ProxyConfiguration == nil {
		return ""
	}
	for _, p := range td.ProxyConfiguration.Properties {
		if p.Name == name {
			return p.Value
		}
	}
	return ""
}

// proxyContainer is the container that runs the proxy: the one named by
// proxyConfiguration, or the only one whose environment has the ARN.
func (td taskDefinition) proxyContainer() string {
	if td.ProxyConfiguration != nil {
		return td.ProxyConfiguration.ContainerName
	}
	for _, c := range td.ContainerDefinitions {
		for _, e := range c.Environment {
			if e.Name == "APPMESH_RESOURCE_ARN" {
				return c.Name
			}
		}
	}
	return ""
}

// newTaskID returns an ECS-style task id: 32 hex digits.
func newTaskID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// accessLog returns the lines of a proxy's stdout.
func (tk *task) accessLog(t *testing.T) []string {
	t.Helper()
	f, err := os.Open(tk.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

// matching returns the lines that match re.
func matching(lines []string, re *regexp.Regexp) []string {
	var out []string
	for _, l := range lines {
		if re.MatchString(l) {
			out = append(out, l)
		}
	}
	return out
}

// watcher is a running watch client: one GET after another from inside a
// task, as the tutorial's while-curl loop.
type watcher struct {
	proc  *proc
	mu    sync.Mutex
	lines []watchLine // every result so far, protected by mu
}

type watchLine struct {
	at   time.Time
	ok   bool
	text string // the body, or the error
}

func (w *world) watch(from *task, url string) *watcher {
	w.t.Helper()
	self, err := os.Executable()
	if err != nil {
		w.t.Fatal(err)
	}
	pr, pw := io.Pipe()
	wt := &watcher{}
	cmd := from.host.Command(context.Background(), -1, self)
	cmd.Env = append(os.Environ(), clientEnv+"=watch")
	cmd.Args = append(cmd.Args, url)
	cmd.Stdout = pw
	p := &proc{name: "watch " + url + " from " + from.name, cmd: cmd, done: make(chan struct{}), tail: &tailBuffer{max: 10}}
	cmd.Stderr = p.tail
	if err := cmd.Start(); err != nil {
		w.t.Fatal(err)
	}
	go func() { p.err = cmd.Wait(); pw.Close(); close(p.done) }() // ends with the process
	go func() {                                                   // ends when the pipe closes, after the process ended
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			f := strings.SplitN(sc.Text(), " ", 3)
			if len(f) < 2 {
				continue
			}
			var ns int64
			fmt.Sscan(f[0], &ns)
			l := watchLine{at: time.Unix(0, ns), ok: f[1] == "ok"}
			if len(f) == 3 {
				l.text = f[2]
			}
			wt.mu.Lock()
			wt.lines = append(wt.lines, l)
			wt.mu.Unlock()
		}
	}()
	wt.proc = p
	w.t.Cleanup(p.stop)
	return wt
}

// since returns the results of requests that ended after t.
func (wt *watcher) since(t time.Time) []watchLine {
	wt.mu.Lock()
	defer wt.mu.Unlock()
	var out []watchLine
	for _, l := range wt.lines {
		if l.at.After(t) {
			out = append(out, l)
		}
	}
	return out
}

// count runs the count client inside from: n GETs of url, each on a new
// connection.
func (w *world) count(from *netns.Host, url string, n int) counts {
	w.t.Helper()
	self, err := os.Executable()
	if err != nil {
		w.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := from.Command(ctx, -1, self, url, fmt.Sprint(n))
	cmd.Env = append(os.Environ(), clientEnv+"=count")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		w.t.Fatalf("count %s from %s: %v: %s", url, from.Name, err, stderr.String())
	}
	var c counts
	if err := json.Unmarshal(stdout.Bytes(), &c); err != nil {
		w.t.Fatalf("count output %q: %v", stdout.String(), err)
	}
	return c
}

// curl runs the tutorial's curl inside from and returns its output and exit
// code (0 on success; curl's own code otherwise).
func curl(t *testing.T, from *netns.Host, url string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stdout, _, err := run(ctx, from, "curl", "-sS", "--max-time", "5", url)
	var ee *exec.ExitError
	switch {
	case err == nil:
		return stdout, 0
	case errors.As(err, &ee):
		return stdout, ee.ExitCode()
	default:
		t.Fatalf("curl %s in %s: %v", url, from.Name, err)
		return "", -1
	}
}

// nslookup runs nslookup inside from and returns the addresses it printed
// for name.
func nslookup(t *testing.T, from *netns.Host, name string) []netip.Addr {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stdout, stderr, err := run(ctx, from, "nslookup", name)
	if err != nil {
		t.Fatalf("nslookup %s in %s: %v\n%s%s", name, from.Name, err, stdout, stderr)
	}
	// After the server's own "Address: ip#53", answers come as
	// "Name: <name>" then "Address: <ip>".
	var addrs []netip.Addr
	inAnswer := false
	for _, line := range strings.Split(stdout, "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "Name:") {
			inAnswer = true
			continue
		}
		if a, ok := strings.CutPrefix(line, "Address:"); ok && inAnswer {
			if ip, err := netip.ParseAddr(strings.TrimSpace(a)); err == nil {
				addrs = append(addrs, ip)
			}
		}
	}
	return addrs
}

// record is one answer line of dig.
type record struct {
	name string
	ttl  int
	typ  string
	data string
}

// dig asks the nameserver of from's resolv.conf (weft's DNS; for the
// control plane's own namespace, weft's DNS on its address) for name's
// records of type typ.
func dig(t *testing.T, from *netns.Host, name, typ string) []record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := []string{"dig", "+noall", "+answer", "+time=2", "+tries=1", name, typ}
	if from.Addr == ctlAddr {
		args = append(args, "@"+ctlAddr.String())
	}
	stdout, stderr, err := run(ctx, from, args...)
	if err != nil {
		t.Fatalf("dig %s %s in %s: %v\n%s%s", name, typ, from.Name, err, stdout, stderr)
	}
	var out []record
	for _, line := range strings.Split(strings.TrimSpace(stdout), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		var r record
		r.name, r.typ, r.data = f[0], f[3], strings.Join(f[4:], " ")
		fmt.Sscan(f[1], &r.ttl)
		out = append(out, r)
	}
	return out
}

// discard is a logger for the lab.
func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }
