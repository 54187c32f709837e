package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// bench starts the processes of a run (the app, the proxies) and stops
// them at the end; their logs and configuration files go to dir.
type bench struct {
	gomaxprocs int
	pprof      bool
	envA, envB []string       // extra environment of the -weft proxies and of the B proxies
	admin      map[int]string // admin address by pid
	appPid     int
	weft       string
	app        string // the binary that runs weft colorapp; weft when empty
	dir        string
	mu         sync.Mutex
	procs      []*exec.Cmd
}

func mustTemp() string {
	d, err := os.MkdirTemp("", "proxybench")
	if err != nil {
		log.Fatal(err)
	}
	return d
}

func (b *bench) start(name string, env []string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	lf, _ := os.Create(filepath.Join(b.dir, filepath.Base(name)+strconv.Itoa(len(b.procs))+".log"))
	cmd.Stdout, cmd.Stderr = lf, lf
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		log.Fatalf("start %s: %v", name, err)
	}
	b.mu.Lock()
	b.procs = append(b.procs, cmd)
	b.mu.Unlock()
	return cmd
}

// stopAll kills every process the bench started, by pid.
func (b *bench) stopAll() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.procs {
		_ = c.Process.Kill()
		_ = c.Wait()
	}
}

func (b *bench) startApp() string {
	addr := fmt.Sprintf("127.0.0.1:%d", freePort())
	bin := b.weft
	if b.app != "" {
		bin = b.app
	}
	b.appPid = b.start(bin, []string{"COLOR=blue"}, "colorapp", "--listen", addr).Process.Pid
	waitHTTP("http://" + addr + "/")
	return addr
}

// startProxy runs a weft proxy of the -weft paths, startProxyB one of the
// B paths: each with its extra environment.
func (b *bench) startProxy(bin, node, xds string, extra ...string) *os.Process {
	return b.runProxy(bin, node, xds, b.envA, extra...)
}

func (b *bench) startProxyB(bin, node, xds string, extra ...string) *os.Process {
	return b.runProxy(bin, node, xds, b.envB, extra...)
}

func (b *bench) runProxy(bin, node, xds string, extraEnv []string, extra ...string) *os.Process {
	admin := fmt.Sprintf("127.0.0.1:%d", freePort())
	args := append([]string{"proxy", "--admin-addr", admin, "--log-level", "warn"}, extra...)
	if b.pprof {
		args = append(args, "--pprof")
	}
	env := append([]string{"APPMESH_RESOURCE_ARN=" + node, "APPMESH_XDS_ENDPOINT=" + xds}, extraEnv...)
	if b.gomaxprocs > 0 {
		args = append(args, "--concurrency", strconv.Itoa(b.gomaxprocs))
	}
	c := b.start(bin, env, args...)
	if b.admin == nil {
		b.admin = map[int]string{}
	}
	b.admin[c.Process.Pid] = admin
	return c.Process
}

// startHAProxy runs haproxy as a plain HTTP reverse proxy in front of the
// app with keep-alive both ways: the same job as one weft proxy.
func (b *bench) startHAProxy(port int, app string) *os.Process {
	return b.haproxy(port, fmt.Sprintf("127.0.0.1:%d", port), app)
}

// haproxy runs haproxy with one frontend bound as bind and one server
// line.
func (b *bench) haproxy(port int, bind, server string) *os.Process {
	return b.runHAProxy(fmt.Sprintf("haproxy-%d.cfg", port), haproxyConfig(bind, server))
}

// haproxyConfig is haproxy's configuration as an HTTP reverse proxy with
// keep-alive both ways, one frontend bound as bind and one server line.
func haproxyConfig(bind, server string) string {
	return fmt.Sprintf(`global
  maxconn 4096
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 15s
  option http-keep-alive
  http-reuse always
frontend fe
  bind %s
  default_backend app
backend app
  server app %s
`, bind, server)
}

// runHAProxy writes cfg to the file name in the bench's directory and
// runs haproxy in the foreground with it.
func (b *bench) runHAProxy(name, cfg string) *os.Process {
	p := filepath.Join(b.dir, name)
	if err := os.WriteFile(p, []byte(cfg), 0o644); err != nil {
		log.Fatal(err)
	}
	return b.start("haproxy", nil, "-db", "-f", p).Process
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitHTTP(url string, tlsCfg ...*tls.Config) {
	c := http.DefaultClient
	if len(tlsCfg) > 0 {
		c = &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg[0]}}
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := c.Get(url)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	log.Fatalf("%s never answered 200", url)
}
