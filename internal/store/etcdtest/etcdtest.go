// Package etcdtest starts real etcd members (Debian's etcd-server,
// /usr/bin/etcd) on free loopback ports for tests: one member, or a
// three-member cluster whose members a test can kill, pause and restart.
package etcdtest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Binary is the etcd executable the tests run; WEFT_ETCD overrides it.
func Binary() string {
	if b := os.Getenv("WEFT_ETCD"); b != "" {
		return b
	}
	return "/usr/bin/etcd"
}

// Member is one etcd process.
type Member struct {
	Name      string
	ClientURL string
	PeerURL   string
	dir       string
	args      []string
	log       *bytes.Buffer // what etcd printed, shown when a test fails

	mu  sync.Mutex // protects cmd and the fields of the running process
	cmd *exec.Cmd
}

// Cluster is a set of members started together.
type Cluster struct {
	Members []*Member
	tls     *TLS
}

// TLS makes the members serve clients over TLS with CertFile and KeyFile
// (PEM), requiring client certificates signed by ClientCAFile when set.
type TLS struct {
	CertFile, KeyFile, ClientCAFile string
}

// Start runs n members (1 or 3) on loopback and waits until the cluster
// answers. They are killed when the test ends.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	return StartTLS(t, n, nil)
}

// StartTLS is Start with clients reaching the members over TLS (nil: plain
// HTTP). Health checks then only wait for the processes to listen.
func StartTLS(t testing.TB, n int, tlsCfg *TLS) *Cluster {
	t.Helper()
	bin := Binary()
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("etcd not found at %s (install Debian's etcd-server, or set WEFT_ETCD): %v", bin, err)
	}
	var lastErr error
	// A port picked free can be taken by someone else before etcd binds
	// it; try again with new ports in that case.
	for attempt := 0; attempt < 3; attempt++ {
		c, err := start(bin, t.TempDir(), n, tlsCfg)
		if err == nil {
			t.Cleanup(func() {
				c.Stop()
				if t.Failed() {
					for _, m := range c.Members {
						m.mu.Lock()
						t.Logf("etcd %s output (last 4 KiB):\n%s", m.Name, tail(m.log.String(), 4096))
						m.mu.Unlock()
					}
				}
			})
			return c
		}
		lastErr = err
	}
	t.Fatalf("start etcd: %v", lastErr)
	return nil
}

// Launch is Start for programs that are not tests (benchmarks): the
// members' data goes under root, and the caller ends them with Stop.
// extra are more etcd flags for every member.
func Launch(root string, n int, extra ...string) (*Cluster, error) {
	bin := Binary()
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("etcd not found at %s (install Debian's etcd-server, or set WEFT_ETCD): %w", bin, err)
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		dir, err := os.MkdirTemp(root, "etcd-")
		if err != nil {
			return nil, err
		}
		c, err := start(bin, dir, n, nil, extra...)
		if err == nil {
			return c, nil
		}
		lastErr = err
	}
	return nil, fmt.Errorf("start etcd: %w", lastErr)
}

func freePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	var ports []int
	for i := 0; i < n; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func start(bin, root string, n int, tlsCfg *TLS, extra ...string) (*Cluster, error) {
	scheme := "http"
	if tlsCfg != nil {
		scheme = "https"
	}
	ports, err := freePorts(2 * n)
	if err != nil {
		return nil, err
	}
	c := &Cluster{}
	var initial []string
	for i := 0; i < n; i++ {
		m := &Member{
			Name:      fmt.Sprintf("m%d", i),
			ClientURL: fmt.Sprintf("%s://127.0.0.1:%d", scheme, ports[2*i]),
			PeerURL:   fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1]),
			dir:       filepath.Join(root, fmt.Sprintf("m%d", i)),
			log:       &bytes.Buffer{},
		}
		initial = append(initial, m.Name+"="+m.PeerURL)
		c.Members = append(c.Members, m)
	}
	for _, m := range c.Members {
		m.args = []string{
			"--name", m.Name,
			"--data-dir", m.dir,
			"--listen-client-urls", m.ClientURL,
			"--advertise-client-urls", m.ClientURL,
			"--listen-peer-urls", m.PeerURL,
			"--initial-advertise-peer-urls", m.PeerURL,
			"--initial-cluster", strings.Join(initial, ","),
			"--initial-cluster-state", "new",
			"--initial-cluster-token", filepath.Base(root),
			"--logger", "zap", "--log-level", "warn",
		}
		m.args = append(m.args, extra...)
		if tlsCfg != nil {
			m.args = append(m.args, "--cert-file", tlsCfg.CertFile, "--key-file", tlsCfg.KeyFile)
			if tlsCfg.ClientCAFile != "" {
				m.args = append(m.args, "--client-cert-auth", "--trusted-ca-file", tlsCfg.ClientCAFile)
			}
		}
		if err := m.run(bin); err != nil {
			c.Stop()
			return nil, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c.tls = tlsCfg
	if err := c.WaitHealthy(ctx); err != nil {
		c.Stop()
		return nil, fmt.Errorf("etcd did not become healthy: %w\n%s", err, tail(c.Members[0].log.String(), 2048))
	}
	return c, nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (m *Member) run(bin string) error {
	cmd := exec.Command(bin, m.args...)
	cmd.Stdout = lockedWriter{&m.mu, m.log}
	cmd.Stderr = cmd.Stdout
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", bin, err)
	}
	m.mu.Lock()
	m.cmd = cmd
	m.mu.Unlock()
	return nil
}

// Stop kills every member.
func (c *Cluster) Stop() {
	for _, m := range c.Members {
		m.Kill()
	}
}

// Endpoints returns every member's client URL.
func (c *Cluster) Endpoints() []string {
	var out []string
	for _, m := range c.Members {
		out = append(out, m.ClientURL)
	}
	return out
}

// Pid is the member's process id; 0 when it is not running.
func (m *Member) Pid() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil {
		return 0
	}
	return m.cmd.Process.Pid
}

// Kill sends SIGKILL to the member and waits for it to exit.
func (m *Member) Kill() {
	m.mu.Lock()
	cmd := m.cmd
	m.cmd = nil
	m.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGCONT) // a stopped process must run to die
	cmd.Process.Kill()
	cmd.Wait()
}

// Pause stops the member with SIGSTOP; Resume continues it.
//
// Pause returns once every thread of the process is stopped (or after 5 s):
// a signal is only queued when kill returns, and a thread running on another
// core can still answer a request in between, which made "a write while
// paused fails" tests pass a write now and then.
func (m *Member) Pause() {
	m.signal(syscall.SIGSTOP)
	m.mu.Lock()
	pid := 0
	if m.cmd != nil && m.cmd.Process != nil {
		pid = m.cmd.Process.Pid
	}
	m.mu.Unlock()
	if pid == 0 {
		return
	}
	deadline := time.Now().Add(5 * time.Second)
	for !allStopped(pid) && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
}

// allStopped reports whether every task of pid is in the stopped state
// ('T' in /proc/PID/task/TID/stat, after the parenthesised command name).
func allStopped(pid int) bool {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil || len(tasks) == 0 {
		return false
	}
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, t.Name()))
		if err != nil {
			return false
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 || i+2 >= len(b) || (b[i+2] != 'T' && b[i+2] != 't') {
			return false
		}
	}
	return true
}

// Resume continues a paused member.
func (m *Member) Resume() { m.signal(syscall.SIGCONT) }

func (m *Member) signal(sig syscall.Signal) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd != nil {
		m.cmd.Process.Signal(sig)
	}
}

// Restart runs a killed member again on its data directory.
func (m *Member) Restart(t testing.TB) {
	t.Helper()
	m.Kill()
	args := make([]string, 0, len(m.args))
	for i := 0; i < len(m.args); i++ {
		if m.args[i] == "--initial-cluster-state" {
			i++
			continue
		}
		args = append(args, m.args[i])
	}
	m.args = args
	if err := m.run(Binary()); err != nil {
		t.Fatal(err)
	}
}

// Client returns a client of the whole cluster, closed when the test ends.
func (c *Cluster) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	cli, err := newClient(c.Endpoints())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func newClient(endpoints []string) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
}

// WaitHealthy waits until every running member answers and one is the
// leader.
func (c *Cluster) WaitHealthy(ctx context.Context) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		lastErr = c.healthy(ctx)
		if lastErr == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), lastErr)
		case <-tick.C:
		}
	}
}

func (c *Cluster) healthy(ctx context.Context) error {
	for _, m := range c.Members {
		m.mu.Lock()
		running := m.cmd != nil
		m.mu.Unlock()
		if !running {
			continue
		}
		if c.tls != nil {
			conn, err := net.DialTimeout("tcp", strings.TrimPrefix(m.ClientURL, "https://"), time.Second)
			if err != nil {
				return fmt.Errorf("%s: %w", m.Name, err)
			}
			conn.Close()
			continue
		}
		cli, err := newClient([]string{m.ClientURL})
		if err != nil {
			return err
		}
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := cli.Status(sctx, m.ClientURL)
		if err == nil && st.Leader == 0 {
			err = fmt.Errorf("%s has no leader", m.Name)
		}
		if err == nil {
			// A linearizable read proves the member serves requests.
			_, err = cli.Get(sctx, "health")
		}
		cancel()
		cli.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", m.Name, err)
		}
	}
	return nil
}

// Leader returns the member that is the leader now.
func (c *Cluster) Leader(ctx context.Context) (*Member, error) {
	for _, m := range c.Members {
		m.mu.Lock()
		running := m.cmd != nil
		m.mu.Unlock()
		if !running {
			continue
		}
		cli, err := newClient([]string{m.ClientURL})
		if err != nil {
			return nil, err
		}
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := cli.Status(sctx, m.ClientURL)
		cancel()
		cli.Close()
		if err == nil && st.Leader == st.Header.MemberId {
			return m, nil
		}
	}
	return nil, fmt.Errorf("no leader among the running members")
}

// Follower returns a running member that is not the leader.
func (c *Cluster) Follower(ctx context.Context) (*Member, error) {
	leader, err := c.Leader(ctx)
	if err != nil {
		return nil, err
	}
	for _, m := range c.Members {
		m.mu.Lock()
		running := m.cmd != nil
		m.mu.Unlock()
		if m != leader && running {
			return m, nil
		}
	}
	return nil, fmt.Errorf("no running follower")
}
