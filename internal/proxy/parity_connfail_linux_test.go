package proxy

import (
	"bufio"
	"fmt"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"syscall"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// TestSocketCreationFailureSamePaths: a request whose upstream socket
// cannot be created (the process out of descriptors), to an HTTP/1.1
// cluster and to an HTTP/2 one, from an HTTP/1.1 client and an h2c one
// whose connections are already up, is answered and logged on every
// path as Envoy answers it: ClientConnectionImpl has no socket, fails
// with "socket creation failure" and closes as LocalClose, which its pool
// reports as a local connection failure (route.ConnectFailed). Until the
// review of round 31 both paths took the socket(2)'s errno for a
// connect's: "remote connection failure, transport failure reason:
// delayed connect error: Too many open files".
func TestSocketCreationFailureSamePaths(t *testing.T) {
	ok := newBackend(t, "ok").addr()
	okH2 := h2cUpstream(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	const (
		body    = resetPrefix + "local connection failure, transport failure reason: socket creation failure"
		details = "upstream_reset_before_response_started{local_connection_failure|socket_creation_failure}"
	)
	format := &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{TextFormat: "%PROTOCOL% %REQ(:PATH)% " +
		"%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %UPSTREAM_TRANSPORT_FAILURE_REASON%\n"}}
	results := map[string]pathResult{}
	var all []string
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			h, logFile := loggedEgress(t, p, format,
				edsCluster("ok"), cla("ok", ok), edsCluster("okh2", h2Upstream), cla("okh2", okH2),
				edsCluster("h1"), cla("h1", deadAddr(t)),
				edsCluster("h2", h2Upstream), cla("h2", deadAddr(t)),
				routeConfig("rds", vhost("v", []string{"*"}, routeTo("/ok", "ok"), routeTo("/okh2", "okh2"), routeTo("/h1", "h1"), routeTo("/h2", "h2"))))
			// Both clients' connections come up, and are proxied to both
			// clusters once (an HTTP/1.1 one handed to the goroutine path
			// for its HTTP/2 cluster, where it is), before the descriptors
			// run out.
			raw, err := net.Dial("tcp", h.addr("egress"))
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			br := bufio.NewReader(raw)
			h1get := func(path string) (string, error) {
				if _, err := fmt.Fprintf(raw, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path); err != nil {
					return "", err
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					return "", err
				}
				return readAnswer(resp)
			}
			h2 := h2cClient(t)
			h2get := func(path string) (string, error) {
				resp, err := h2.Get("http://" + h.addr("egress") + path)
				if err != nil {
					return "", err
				}
				return readAnswer(resp)
			}
			for _, get := range []func(string) (string, error){h1get, h2get} {
				for _, path := range []string{"/ok", "/okh2"} {
					if a, err := get(path); err != nil || !strings.HasPrefix(a, "200 ") {
						t.Fatalf("before: %s %q %v", path, a, err)
					}
				}
			}
			// Not the HTTP/2 cluster when the loops hand an HTTP/1.1
			// request to it off: out of descriptors, the goroutine path
			// closes that connection unanswered (the review's report).
			paths := []string{"/h1", "/h2"}
			if p.name == "h2c handed off" {
				paths = paths[:1]
			}
			answers := map[string]string{}
			var errs []error
			func() {
				defer outOfDescriptors(t)()
				for _, path := range paths {
					for proto, get := range map[string]func(string) (string, error){"HTTP/1.1": h1get, "HTTP/2": h2get} {
						a, err := get(path)
						answers[proto+" "+path] = a
						errs = append(errs, err)
					}
				}
			}()
			var wantLog []string
			for _, key := range slices.Sorted(maps.Keys(answers)) {
				if answers[key] != "503 "+body {
					t.Errorf("%s: answered %q, want %q", key, answers[key], "503 "+body)
				}
				wantLog = append(wantLog, fmt.Sprintf("%s 503 UF %s socket_creation_failure", key, details))
			}
			for _, err := range errs {
				if err != nil {
					t.Error(err)
				}
			}
			wantLog = append(wantLog, "HTTP/1.1 /ok 200 - via_upstream -", "HTTP/2 /ok 200 - via_upstream -",
				"HTTP/1.1 /okh2 200 - via_upstream -", "HTTP/2 /okh2 200 - via_upstream -")
			log := awaitWantLog(t, logFile, wantLog)
			// Compared on every path: what every path asked.
			var same []string
			for l := range strings.Lines(log) {
				if !strings.Contains(l, " /h2 ") {
					same = append(same, l)
				}
			}
			results[p.name] = pathResult{answers: answers, log: strings.Join(same, "")}
			all = []string{"HTTP/1.1 /h1", "HTTP/2 /h1"}
		})
	}
	sameAsGoroutinePath(t, results, all)
}

// outOfDescriptors lowers the process's descriptor limit to its lowest
// free descriptor, so that every descriptor it opens next fails with
// EMFILE, and returns what raises it again.
func outOfDescriptors(t *testing.T) (restore func()) {
	t.Helper()
	var was syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &was); err != nil {
		t.Fatal(err)
	}
	fd, err := syscall.Open("/dev/null", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	_ = syscall.Close(fd)
	low := was
	low.Cur = uint64(fd)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &was); err != nil {
			t.Fatal(err)
		}
	}
}
