package weftbin

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// Server is one running `weft server` process.
type Server struct {
	Name     string
	API, XDS string // host:port of its API and xDS listeners

	cmd    *exec.Cmd
	done   chan struct{} // closed when the process has ended
	err    error         // Wait's result, set before done is closed
	tail   []string      // its last stderr lines, complete once done is closed
	killed atomic.Bool
}

var (
	apiListening = regexp.MustCompile(`msg="api listening" addr=(\S+)`)
	xdsListening = regexp.MustCompile(`msg="xds listening".* addr=(\S+)`)
)

// startTimeout bounds how long a server may take to report its listeners
// (it waits for nothing but its store).
const startTimeout = 60 * time.Second

// tailLines is how many of its last stderr lines a Server keeps, to say
// why it exited.
const tailLines = 20

// StartServer runs `bin server` with its API, xDS and DNS listeners on
// 127.0.0.1 ports of the kernel's choosing, followed by args (the store,
// region, account...), and returns once it has logged the API and xDS
// addresses. A server that exits first, or does not report them within
// 60 s or before ctx ends, is an error (and is killed). The process is
// killed with SIGKILL if the calling program dies; otherwise the caller
// ends it with Kill.
func StartServer(ctx context.Context, bin, name string, args ...string) (*Server, error) {
	return StartServerLines(ctx, bin, name, nil, args...)
}

// StartServerLines is StartServer with every stderr line of the process
// also handed to onLine (when not nil) with the time it was read, on the
// goroutine reading them: onLine must not block.
func StartServerLines(ctx context.Context, bin, name string, onLine func(at time.Time, line string), args ...string) (*Server, error) {
	cmd := exec.Command(bin, append([]string{"server", "--api-addr", "127.0.0.1:0", "--xds-addr", "127.0.0.1:0", "--dns-addr", "127.0.0.1:0"}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	s := &Server{Name: name, cmd: cmd, done: make(chan struct{})}
	addrs := make(chan [2]string, 2)
	go func() { // reads stderr until the process closes it, then reaps it; ends when the process does
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			if onLine != nil {
				onLine(time.Now(), line)
			}
			if m := apiListening.FindStringSubmatch(line); m != nil {
				addrs <- [2]string{"api", m[1]}
			}
			if m := xdsListening.FindStringSubmatch(line); m != nil {
				addrs <- [2]string{"xds", m[1]}
			}
			if len(s.tail) == tailLines {
				s.tail = s.tail[1:]
			}
			s.tail = append(s.tail, line)
		}
		io.Copy(io.Discard, stderr)
		s.err = cmd.Wait()
		close(s.done)
	}()
	deadline := time.NewTimer(startTimeout)
	defer deadline.Stop()
	for s.API == "" || s.XDS == "" {
		select {
		case a := <-addrs:
			if a[0] == "api" {
				s.API = a[1]
			} else {
				s.XDS = a[1]
			}
		case <-s.done:
			return nil, fmt.Errorf("weft server %s exited before listening: %v\n%s", name, s.err, strings.Join(s.tail, "\n"))
		case <-deadline.C:
			s.Kill()
			return nil, fmt.Errorf("weft server %s did not report its listeners within %v", name, startTimeout)
		case <-ctx.Done():
			s.Kill()
			return nil, ctx.Err()
		}
	}
	return s, nil
}

// Kill sends SIGKILL and waits for the process to end. It may be called
// again.
func (s *Server) Kill() {
	s.killed.Store(true)
	s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.done
}

// Killed reports whether Kill was called.
func (s *Server) Killed() bool { return s.killed.Load() }

// Done is closed when the process has ended (killed or on its own).
func (s *Server) Done() <-chan struct{} { return s.done }

// Err is the process's exit status (Wait's result), once Done is closed.
func (s *Server) Err() error {
	<-s.done
	return s.err
}

// Pid is the process's id.
func (s *Server) Pid() int { return s.cmd.Process.Pid }
