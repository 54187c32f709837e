package demo

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/netns"
	"github.com/weftmesh/weft/internal/netns/netnstest"

	"github.com/weftmesh/weft/internal/weftbin"
)

// TestDemo runs weft demo briefly in each layout and checks from its output
// that requests flowed, were split about 4:1 between green and yellow, and
// passed through the proxies (their own request counters), and that the
// console's address it prints answers, while it runs, with the console
// listing the demo's mesh.
func TestDemo(t *testing.T) {
	bin := weftbin.Build(t)
	tests := []struct {
		layout  string
		through []string // the proxies' counters in the summary, each non-zero
	}{
		// The gateway takes the request in, then sends it out of its
		// egress listener to green or yellow.
		{LayoutLoopback, []string{`gateway in=[1-9]\d* out=[1-9]\d*`}},
		// red's app sends out through red's proxy; green's and yellow's
		// proxies take the requests in for their apps.
		{LayoutNetns, []string{`red in=\d+ out=[1-9]\d*`, `green in=[1-9]\d*`, `yellow in=[1-9]\d*`}},
	}
	for _, tt := range tests {
		t.Run(tt.layout, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			argv := []string{bin, "demo", "--layout", tt.layout, "--duration", "5s", "--rate", "100"}
			cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
			client := &http.Client{Timeout: 10 * time.Second} // reaches the API the demo prints
			switch {
			case tt.layout == LayoutNetns:
				netnstest.Require(t, "iptables", "iptables-restore", "setpriv")
			case os.Geteuid() == 0:
				// As root, the loopback layout gets a network namespace
				// of its own, so its proxy's fixed egress port 15001
				// meets nothing else running here; its API is reached
				// from inside that namespace.
				var h *netns.Host
				cmd, h = isolated(t, ctx, argv)
				client.Transport = &http.Transport{DialContext: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
					err = h.Do(func() error { // addr is ip:port: no name resolved on the namespace's thread
						c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
						return err
					})
					return c, err
				}}
				t.Cleanup(client.CloseIdleConnections)
			}
			// Its output is read as it comes: the console's address is
			// fetched while the demo runs.
			var out, errOut bytes.Buffer
			pr, pw := io.Pipe()
			cmd.Stdout, cmd.Stderr = pw, &errOut
			consoleURL := make(chan string, 1)
			scanned := make(chan struct{})
			go func() { // ends when pw is closed, after the demo has exited
				defer close(scanned)
				sc := bufio.NewScanner(pr)
				for sc.Scan() {
					out.WriteString(sc.Text() + "\n")
					if m := consoleLine.FindStringSubmatch(sc.Text()); m != nil {
						select {
						case consoleURL <- m[1]:
						default:
						}
					}
				}
				io.Copy(io.Discard, pr)
			}()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait(); pw.Close() }() // ends when the demo exits (ctx kills it at the latest)
			var err error
			select {
			case u := <-consoleURL:
				checkConsole(t, client, u)
				err = <-exited
			case err = <-exited:
				t.Errorf("weft demo exited without printing the console's address")
			}
			<-scanned
			if tt.layout == LayoutNetns && cmd.Process != nil {
				if left := netns.Remaining(ctx, netns.Prefix(netnsFamily, cmd.Process.Pid)); len(left) > 0 {
					t.Errorf("weft demo left behind: %v", left)
				}
			}
			t.Logf("weft demo output:\n%s", out.String())
			if err != nil {
				t.Fatalf("weft demo: %v\n%s", err, errOut.String())
			}
			summary := lastLine(out.String(), "weft demo: ")
			m := regexp.MustCompile(`^weft demo: (\d+) requests in \S+, (\d+) errors; overall green ([\d.]+)% yellow ([\d.]+)%`).FindStringSubmatch(summary)
			if m == nil {
				t.Fatalf("summary %q does not show a green/yellow split", summary)
			}
			sent, _ := strconv.Atoi(m[1])
			green, _ := strconv.ParseFloat(m[3], 64)
			if sent < 100 {
				t.Errorf("only %d requests in 5 s at 100/s", sent)
			}
			// A few hundred requests: 80 % within 10 points is far
			// outside chance (about 4 standard deviations).
			if green < 70 || green > 90 {
				t.Errorf("green share %.1f%%, want about 80%%", green)
			}
			for _, re := range tt.through {
				if !regexp.MustCompile(re).MatchString(summary) {
					t.Errorf("summary %q does not show the requests in the proxies' counters (%s)", summary, re)
				}
			}
			if !strings.Contains(out.String(), "split: ") {
				t.Error("no live split line was printed")
			}
		})
	}
}

// consoleLine is weft demo's line giving the console's address.
var consoleLine = regexp.MustCompile(`^weft demo: .*in the console.*: (http://\S+)$`)

// checkConsole fetches the console's address weft demo printed, as a
// browser would, and checks that it is the console with the demo's mesh
// in its list.
func checkConsole(t *testing.T, client *http.Client, u string) {
	t.Helper()
	resp, err := client.Get(u) // the fragment (the view) stays in the browser
	if err != nil {
		t.Fatalf("the console's address %s: %v", u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("the console's address %s: %v", u, err)
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("the console's address %s: %s, %s", u, resp.Status, resp.Header.Get("Content-Type"))
	}
	// The page is drawn with the meshes list in it: the demo's mesh
	// links to its own view.
	if !strings.Contains(string(body), `id="list-mesh"`) || !strings.Contains(string(body), `href="#/mesh/color-mesh"`) {
		t.Fatalf("the console's address %s is not the console listing color-mesh:\n%.2000s", u, body)
	}
	t.Logf("the console at %s: %d bytes, lists color-mesh", u, len(body))
}

// isolated returns argv as a command inside a network namespace of its own
// (loopback only), removed when the test ends, and that namespace.
func isolated(t *testing.T, ctx context.Context, argv []string) (*exec.Cmd, *netns.Host) {
	t.Helper()
	const family = "wftl"
	netns.Sweep(ctx, family)
	lab, err := netns.New(ctx, family, netip.MustParsePrefix("10.251.91.0/24"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Errorf("remove namespace: %v", err)
		}
	})
	h, err := lab.AddHost(ctx, "demo", netip.MustParseAddr("10.251.91.2"), netns.HostOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return h.Command(ctx, -1, argv...), h
}

func lastLine(s, prefix string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(lines[i], prefix) {
			return lines[i]
		}
	}
	return ""
}

func TestDownstreamRequests(t *testing.T) {
	stats := "cluster.cds_egress_color-mesh_green_http_80.upstream_rq_total: 9\n" +
		"http.ingress.downstream_rq_total: 7\n" +
		"http.ingress.http.80.downstream_rq_total: 2\n" +
		"http.egress.downstream_rq_total: 5\n" +
		"http.admin.downstream_rq_total: 100\n" +
		"control_plane.connected_state: 1\n"
	in, out := downstreamRequests(stats)
	if in != 9 || out != 5 {
		t.Errorf("downstreamRequests = in %d out %d, want 9 and 5", in, out)
	}
}

func TestWindow(t *testing.T) {
	w := newWindow(4)
	for _, b := range []string{"yellow", "green", "green", "green", "green"} {
		w.add(b, nil)
	}
	w.add("", errStatus)
	s := w.snapshot()
	if s.sent != 6 || s.errors != 1 || s.recent != 4 {
		t.Errorf("snapshot = %+v, want 6 sent, 1 error, 4 recent", s)
	}
	// The last four: green, green, green, error.
	if s.shares["green"] != 75 || s.shares["yellow"] != 0 {
		t.Errorf("shares = %v, want green 75 and no yellow", s.shares)
	}
	if s.total["green"] != 4 || s.total["yellow"] != 1 {
		t.Errorf("totals = %v", s.total)
	}
}
