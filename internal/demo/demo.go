// Package demo is weft demo: on one machine it starts weft server on a
// temporary store, creates the seed tutorial's color mesh through the real
// API (App Mesh's and Cloud Map's wire formats, as the AWS SDKs send them),
// starts the color apps behind weft proxies, sends a
// steady stream of requests to the virtual router and shows, live, how the
// mesh splits them.
//
// As root it lays the tutorial out as ECS would: each task a network
// namespace with its own address, iptables interception (weft intercept) and
// a sidecar proxy; requests leave the red task as its app's would. Without
// root it uses a loopback layout: the apps on distinct 127.0.0.x addresses,
// registered in Cloud Map with explicit ports, and the requests sent to the
// virtual gateway's proxy, which routes them through its router to the apps.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Layouts.
const (
	LayoutAuto     = "auto"
	LayoutNetns    = "netns"
	LayoutLoopback = "loopback"
)

// Options configure Run.
type Options struct {
	Binary   string        // the weft binary: server, proxy, intercept, colorapp
	Layout   string        // LayoutAuto, LayoutNetns or LayoutLoopback
	Duration time.Duration // how long to send traffic; 0: until ctx ends
	Rate     int           // requests per second
	Out      io.Writer     // where the split is shown
	TTY      bool          // redraw in place; otherwise one line per second
	Log      *slog.Logger  // progress and errors of the parts
}

// Run sets everything up, shows the split until ctx ends or Duration
// passes, then stops every process it started and removes what it created.
func Run(ctx context.Context, opt Options) error {
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	if opt.Rate <= 0 {
		opt.Rate = 100
	}
	layout := opt.Layout
	if layout == "" || layout == LayoutAuto {
		layout = LayoutLoopback
		if netnsUsable(ctx) {
			layout = LayoutNetns
		}
	}
	if err := dieWithParent(); err != nil {
		return err
	}
	// What an earlier demo killed outright (SIGKILL) left behind goes
	// first; then this demo's own lock file says what it starts.
	sweepStale(ctx, opt.Log)
	tmp, err := os.MkdirTemp("", "weft-demo-")
	if err != nil {
		return fmt.Errorf("temp dir: %w", err)
	}
	defer os.RemoveAll(tmp)
	lock, err := createLock(tmp, opt.Binary)
	if err != nil {
		return err
	}
	defer lock.remove()
	// The proxies run as UID 1337 and must be able to open their log
	// files' directory.
	if err := os.Chmod(tmp, 0o755); err != nil {
		return fmt.Errorf("temp dir: %w", err)
	}
	// The parts live until Run returns, not until Ctrl-C: after ctx ends
	// the demo still reads their counters and stops them in order. On the
	// way out: cancel (every child gets SIGTERM, the in-process apps stop),
	// wait for the children, then remove the namespaces, which only go
	// away once nothing runs in them.
	partsCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	spawn, stopSpawner := spawner()
	ps := &procs{ctx: partsCtx, dir: tmp, log: opt.Log, spawn: spawn, state: lock}
	var removeLab func()
	defer func() {
		cancel()
		ps.stopAll()
		ps.bg.Wait()
		stopSpawner()
		if removeLab != nil {
			removeLab()
		}
	}()

	fmt.Fprintf(opt.Out, "weft demo: starting weft server, the color mesh and its proxies (%s layout)...\n", layout)
	var e *env
	switch layout {
	case LayoutNetns:
		e, removeLab, err = setUpNetns(ctx, opt, ps)
	case LayoutLoopback:
		e, err = setUpLoopback(ctx, opt, ps)
	default:
		return fmt.Errorf("unknown layout %q (want %s, %s or %s)", layout, LayoutAuto, LayoutNetns, LayoutLoopback)
	}
	if err != nil {
		return err
	}
	e.layout = layout
	fmt.Fprintf(opt.Out, "weft demo: the API is at %s. Change the weights while it runs, e.g. 1:1:\n  %s\n",
		e.apiURL, updateRouteCommand(e.apiURL, 1, 1))
	fmt.Fprintf(opt.Out, "weft demo: or in the console, with sliders and the live topology: %s/console/#/mesh/color-mesh/route/color-router/color-route\n", e.apiURL)

	runCtx := ctx
	if opt.Duration > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, opt.Duration)
		defer cancel()
	}
	return show(runCtx, e, opt, ps)
}

// env is what a layout hands to the traffic loop and the display.
type env struct {
	layout  string
	target  string       // the URL requested
	from    string       // who requests it, for the header
	client  *http.Client // makes the requests as the app would
	proxies []proxyAdmin // whose /stats show traffic passing through
	api     clients      // the API, as the demo reaches it
	apiURL  string       // the API, as reachable from this machine
}

// proxyAdmin reaches one proxy's admin listener.
type proxyAdmin struct {
	name   string
	client *http.Client
	url    string // http://127.0.0.1:9901
}

// procs are the processes the demo started.
type procs struct {
	ctx context.Context // what the processes are started with; ends when Run returns
	dir string          // where their output goes
	log *slog.Logger
	bg  sync.WaitGroup // goroutines serving in-process apps; they end with Run's context

	// spawn runs a process start on the demo's one spawning thread (see
	// childAttr); state records the children for a later demo's sweep.
	spawn func(start func() error) error
	state *lockFile

	mu   sync.Mutex
	list []*proc // protected by mu
}

// spawner runs functions on one OS thread, locked for as long as the demo
// runs: a child's parent-death signal fires when the thread that forked it
// exits, and Go may end other threads (one that entered a namespace) at
// any time. It returns the function that runs a start there, and stop,
// which ends the thread once every child is stopped.
func spawner() (spawn func(start func() error) error, stop func()) {
	reqs := make(chan func(), 1)
	done := make(chan struct{})
	go func() { // ends when stop closes reqs
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		for f := range reqs {
			f()
		}
	}()
	spawn = func(start func() error) error {
		errc := make(chan error, 1)
		reqs <- func() { errc <- start() }
		return <-errc
	}
	return spawn, func() { close(reqs); <-done }
}

type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has been waited for
	err  error         // valid after done
}

// start starts cmd, its stdout and stderr to <dir>/<name>.log (owned by
// uid when uid >= 0, since a proxy may reopen /dev/stdout by path).
func (ps *procs) start(name string, cmd *exec.Cmd, uid int) (*proc, error) {
	path := filepath.Join(ps.dir, strings.ReplaceAll(name, " ", "-")+".log")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	defer f.Close() // the child has its own descriptor
	if uid >= 0 {
		if err := f.Chown(uid, uid); err != nil {
			return nil, fmt.Errorf("start %s: %w", name, err)
		}
	}
	cmd.Stdout, cmd.Stderr = f, f
	// When the demo's context ends, ask politely; stopAll (or Go, after
	// WaitDelay) kills what does not listen.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	// A process group of its own: Ctrl-C at the terminal reaches the demo
	// only, which then stops its children in order, instead of every
	// child dying at once and the demo reporting the first as a failure.
	cmd.SysProcAttr = childAttr()
	if err := ps.spawn(cmd.Start); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	if err := ps.state.add(cmd.Process.Pid); err != nil {
		ps.log.Warn("record the child in the lock file", "name", name, "err", err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }() // ends with the process; stopAll ends it
	ps.mu.Lock()
	ps.list = append(ps.list, p)
	ps.mu.Unlock()
	ps.log.Debug("started", "name", name, "pid", cmd.Process.Pid, "output", path)
	return p, nil
}

// anyFailed returns the first process that has exited, as an error.
func (ps *procs) anyFailed() error {
	ps.mu.Lock()
	list := ps.list
	ps.mu.Unlock()
	for _, p := range list {
		if err := ps.failed(p); err != nil {
			return err
		}
	}
	return nil
}

// failed returns an error if p has exited, with the end of its output.
func (ps *procs) failed(p *proc) error {
	select {
	case <-p.done:
	default:
		return nil
	}
	b, _ := os.ReadFile(filepath.Join(ps.dir, strings.ReplaceAll(p.name, " ", "-")+".log"))
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 8 {
		lines = lines[len(lines)-8:]
	}
	return fmt.Errorf("%s exited (%v):\n%s", p.name, p.err, strings.Join(lines, "\n"))
}

// stopAll stops the processes in reverse order of start: SIGTERM, then
// SIGKILL after 5 s.
func (ps *procs) stopAll() {
	ps.mu.Lock()
	list := ps.list
	ps.list = nil
	ps.mu.Unlock()
	for i := len(list) - 1; i >= 0; i-- {
		p := list[i]
		select {
		case <-p.done:
			continue
		default:
		}
		start := time.Now()
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			ps.log.Warn("did not stop within 5s of SIGTERM; killing it", "name", p.name)
			p.cmd.Process.Kill()
			<-p.done
		}
		ps.log.Debug("stopped", "name", p.name, "took", time.Since(start))
	}
}

// waitHTTP polls url with c until it answers 200 (and the body contains
// want, if set), p exits, or the deadline passes.
func waitHTTP(ctx context.Context, ps *procs, p *proc, c *http.Client, url, want string, within time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	var last error
	for {
		if p != nil {
			if err := ps.failed(p); err != nil {
				return err
			}
		}
		body, err := get(ctx, c, url)
		if err == nil && strings.Contains(body, want) {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("body %q", body)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: not ready within %s: %w", url, within, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

var errStatus = errors.New("status not 200")

// get does one GET and returns the body; any status but 200 is an error.
func get(ctx context.Context, c *http.Client, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%w: %d %q", errStatus, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return strings.TrimSpace(string(b)), nil
}
