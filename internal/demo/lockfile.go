package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weftmesh/weft/internal/netns"
)

// lockFile is a running demo's record, <temp dir>/weft-demo-<pid>.lock:
// held locked (flock) while the demo runs, it names the demo's temporary
// directory, its weft binary and the children it started. The kernel drops
// the lock when the demo dies, however it dies, so a later demo that can
// take the lock knows the demo is gone and removes what it left
// (sweepStale).
type lockFile struct {
	path string

	mu    sync.Mutex // protects f's content and state
	f     *os.File
	state lockState
}

type lockState struct {
	Pid      int    `json:"pid"`
	Dir      string `json:"dir"`
	Binary   string `json:"binary"`
	Children []int  `json:"children"` // each the leader of its own process group
}

const lockPattern = "weft-demo-*.lock"

func createLock(dir, binary string) (*lockFile, error) {
	path := filepath.Join(os.TempDir(), "weft-demo-"+strconv.Itoa(os.Getpid())+".lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock file: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	l := &lockFile{path: path, f: f, state: lockState{Pid: os.Getpid(), Dir: dir, Binary: binary}}
	if err := l.write(); err != nil {
		l.remove()
		return nil, err
	}
	return l, nil
}

// add records a child's pid.
func (l *lockFile) add(pid int) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.state.Children = append(l.state.Children, pid)
	return l.writeLocked()
}

func (l *lockFile) write() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.writeLocked()
}

func (l *lockFile) writeLocked() error {
	b, _ := json.Marshal(l.state)
	if err := l.f.Truncate(0); err != nil {
		return fmt.Errorf("lock file: %w", err)
	}
	if _, err := l.f.WriteAt(append(b, '\n'), 0); err != nil {
		return fmt.Errorf("lock file: %w", err)
	}
	return nil
}

// remove deletes the lock file, then releases the lock: the demo is over.
func (l *lockFile) remove() {
	os.Remove(l.path)
	l.f.Close()
}

// sweepStale removes what demos that died without cleaning up left: for
// each lock file nobody holds, it kills the recorded children still running
// the recorded binary (their process groups), removes the recorded
// temporary directory and the file, then the namespaces and links of
// demos no longer running.
func sweepStale(ctx context.Context, log *slog.Logger) {
	files, _ := filepath.Glob(filepath.Join(os.TempDir(), lockPattern))
	swept := 0
	for _, path := range files {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			continue
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close() // a demo that is running
			continue
		}
		var st lockState
		b, _ := os.ReadFile(path)
		if err := json.Unmarshal(b, &st); err == nil {
			log.Warn("removing what a demo that was killed left behind", "pid", st.Pid, "children", len(st.Children), "dir", st.Dir)
			for _, pid := range st.Children {
				if runs(pid, st.Binary) {
					syscall.Kill(-pid, syscall.SIGKILL)
					syscall.Kill(pid, syscall.SIGKILL)
					waitGone(ctx, pid, 5*time.Second)
				}
			}
			if strings.HasPrefix(filepath.Base(st.Dir), "weft-demo-") && filepath.Dir(st.Dir) == filepath.Clean(os.TempDir()) {
				os.RemoveAll(st.Dir)
			}
		}
		os.Remove(path)
		f.Close()
		swept++
	}
	if swept > 0 && os.Geteuid() == 0 {
		if _, err := netns.Sweep(ctx, netnsFamily); err != nil {
			log.Warn("remove an earlier demo's namespaces", "err", err)
		}
	}
}

// runs reports whether process pid runs binary (not a reused pid).
func runs(pid int, binary string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return false
	}
	argv := bytes.Split(b, []byte{0})
	for _, a := range argv { // binary itself, or a wrapper (ip, setpriv) not yet exec'd into it
		if string(a) == binary {
			return true
		}
	}
	return false
}

// waitGone waits until pid has exited, at most within.
func waitGone(ctx context.Context, pid int, within time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	for {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}
