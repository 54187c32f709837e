package evloop

import (
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The loops' reads and writes are on non-blocking sockets: they never
// wait, so they go straight to the kernel without telling the Go
// scheduler (RawSyscall). A blocking system call made the usual way
// costs the scheduler a hand-off of the P and a wake-up of its monitor
// thread on return: measured, 1.2-1.9 nanosleep and 0.7 futex calls per
// request at 1,000 requests/s (docs/bench/proxy.md, step 5).

func rawRead(fd int, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func rawWrite(fd int, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// rawWritev writes the buffers of iov with one writev, and clears iov:
// they go back to a free list, and the loop's array keeps no pointer to
// them. Not unix.Writev: it takes a [][]byte and builds iovecs from it
// on every call (past 8 on the heap), and makes the blocking system call
// whose scheduler hand-off this file measured.
func rawWritev(fd int, iov []unix.Iovec) (int, error) {
	n, _, e := unix.RawSyscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
	clear(iov)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// pollNow returns the events ready now, without waiting.
func pollNow(ep int, evs []unix.EpollEvent) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(ep), uintptr(unsafe.Pointer(&evs[0])), uintptr(len(evs)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// A waiter blocks until the loop's epoll has events (or the timeout)
// and returns them.
type waiter interface {
	wait(evs []unix.EpollEvent, timeout time.Duration) (int, error)
	close()
}

// waitMillis is epoll_wait's timeout for d: rounded up, so that a wait
// never ends before the timer it waits for is due.
func waitMillis(d time.Duration) int {
	return int((d + time.Millisecond - 1) / time.Millisecond)
}

// threadWaiter blocks its locked OS thread in epoll_wait.
type threadWaiter struct{ ep int }

func (w threadWaiter) wait(evs []unix.EpollEvent, timeout time.Duration) (int, error) {
	if n, err := pollNow(w.ep, evs); n > 0 || err != nil {
		return n, err
	}
	return unix.EpollWait(w.ep, evs, waitMillis(timeout))
}

func (w threadWaiter) close() {}

// rawWaiter blocks its thread in epoll_wait as a raw system
// call: the scheduler never hears of the wait. A preemption signal (the
// garbage collector stopping the world, or sysmon every 10 ms) ends it
// with EINTR, and the loop's next call is where it is preempted; the
// timeout bounds the wait if signals are off (GODEBUG=asyncpreemptoff=1).
type rawWaiter struct{ ep int }

// rawWaitMax bounds one raw wait.
const rawWaitMax = 10 * time.Millisecond

func (w rawWaiter) wait(evs []unix.EpollEvent, timeout time.Duration) (int, error) {
	ms := waitMillis(min(timeout, rawWaitMax))
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(w.ep), uintptr(unsafe.Pointer(&evs[0])), uintptr(len(evs)), uintptr(ms), 0, 0)
	if e == unix.EINTR {
		return 0, nil
	}
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func (w rawWaiter) close() {}

// netpollWaiter parks the loop's goroutine in Go's own netpoller until
// the loop's epoll descriptor is readable (it has events), then takes
// them without waiting. The goroutine holds no OS thread while parked.
type netpollWaiter struct {
	ep       int
	f        *os.File
	rc       syscall.RawConn
	deadline time.Time
	evs      []unix.EpollEvent
	n        int
	err      error
	poll     func(uintptr) bool // w.pollReady, allocated once
}

func newNetpollWaiter(ep int) (*netpollWaiter, error) {
	if err := unix.SetNonblock(ep, true); err != nil {
		return nil, err
	}
	// The file does not own ep: the loop closes it.
	dup, err := unix.FcntlInt(uintptr(ep), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(dup), "epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	w := &netpollWaiter{ep: ep, f: f, rc: rc}
	w.poll = w.pollReady
	return w, nil
}

// pollReady is rc.Read's callback: true once there are events or an
// error other than an interruption.
func (w *netpollWaiter) pollReady(uintptr) bool {
	w.n, w.err = pollNow(w.ep, w.evs)
	return w.n > 0 || (w.err != nil && w.err != unix.EINTR)
}

func (w *netpollWaiter) wait(evs []unix.EpollEvent, timeout time.Duration) (int, error) {
	now := time.Now()
	// A deadline is set only when it comes earlier than the one set (or
	// that one passed): a later one costs an early wake-up, not a call.
	if until := now.Add(timeout); w.deadline.Before(now) || until.Before(w.deadline) {
		w.deadline = until
		if err := w.f.SetReadDeadline(w.deadline); err != nil {
			return 0, err
		}
	}
	w.evs = evs
	err := w.rc.Read(w.poll)
	w.evs = nil
	if err != nil {
		if os.IsTimeout(err) {
			return 0, nil
		}
		return 0, err
	}
	return w.n, w.err
}

func (w *netpollWaiter) close() { w.f.Close() }
