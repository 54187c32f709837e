package proxy

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// uuidRE is a version 4 UUID, as both paths generate x-request-id.
var uuidRE = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}`)

// TestEmptyRequestIDSamePaths: an empty x-request-id is replaced by a
// new ID as a missing one is (Envoy 1.34.0, UUIDRequestIDExtension::set;
// route.KeepsRequestID): the upstream gets one x-request-id, a fresh
// UUID, and %REQ(X-REQUEST-ID)% logs the same; a non-empty one is kept,
// and an empty line beside a non-empty one is dropped. Alike on every
// path, over HTTP/1.1 and h2c, to HTTP/1.1 and HTTP/2 upstreams, served
// by the loops on theirs (the loops forwarded the empty line and added
// no ID).
func TestEmptyRequestIDSamePaths(t *testing.T) {
	format := &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{
		TextFormat: "%REQ(:PATH)% %PROTOCOL% %REQ(X-REQUEST-ID)%\n"}}
	echoIDs := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = fmt.Fprintf(w, "%q", r.Header["X-Request-Id"])
	})
	clusters := twoUpstreams(t, echoIDs)
	rc := routeConfig("rds", vhost("v", []string{"*"}, routeTo("/1/", "h1"), routeTo("/2/", "h2")))
	cases := []struct {
		name string
		ids  []string // the client's x-request-id lines
		want string   // what the upstream gets, <uuid> for a fresh one
	}{
		{"empty", []string{""}, `["<uuid>"]`},
		{"kept", []string{"kept-1"}, `["kept-1"]`},
		{"beside", []string{"", "kept-2"}, `["kept-2"]`},
	}
	results := map[string]pathResult{}
	for _, p := range proxyPaths() {
		t.Run(p.name, func(t *testing.T) {
			h, logFile := loggedEgress(t, p, format, append(clusters, rc)...)
			res := pathResult{answers: map[string]string{}}
			sent := map[string]string{} // log line start -> the ID the upstream got
			h2c := h2cClient(t)
			for _, up := range []string{"1", "2"} {
				for _, c := range cases {
					path := "/" + up + "/" + c.name
					var extra []string
					for _, id := range c.ids {
						extra = append(extra, "X-Request-Id: "+id)
					}
					h1 := getRewritten(t, h.addr("egress"), path, strings.Join(extra, "\r\n"))
					hr, err := http.NewRequest("GET", "http://"+h.addr("egress")+path, nil)
					if err != nil {
						t.Fatal(err)
					}
					hr.Host = "x"
					hr.Header["X-Request-Id"] = c.ids
					resp, err := h2c.Do(hr)
					if err != nil {
						t.Fatal(err)
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					h2 := fmt.Sprintf("%d %s", resp.StatusCode, b)
					for proto, got := range map[string]string{"HTTP/1.1": h1, "HTTP/2": h2} {
						n := proto + " " + path
						res.answers[n] = uuidRE.ReplaceAllString(got, "<uuid>")
						if want := "200 " + c.want; res.answers[n] != want {
							t.Errorf("%s: upstream got %s, want %s", n, got, want)
						}
						if id := uuidRE.FindString(got); id != "" {
							sent[path+" "+proto] = id
						}
					}
				}
			}
			log := awaitLog(t, logFile, 2*2*len(cases))
			for start, id := range sent {
				if !strings.Contains("\n"+log, "\n"+start+" "+id+"\n") {
					t.Errorf("access log\n%s\nwithout %q", log, start+" "+id)
				}
			}
			res.log = uuidRE.ReplaceAllString(log, "<uuid>")
			for _, up := range []string{"1", "2"} {
				for _, proto := range []string{"HTTP/1.1", "HTTP/2"} {
					for _, w := range []string{"empty " + proto + " <uuid>", "kept " + proto + " kept-1", "beside " + proto + " kept-2"} {
						if w = "/" + up + "/" + w; !strings.Contains("\n"+res.log+"\n", "\n"+w+"\n") {
							t.Errorf("access log\n%s\nwithout %q", res.log, w)
						}
					}
				}
			}
			if l := h.listener("egress"); !p.h2Goroutines && (!l.OnLoops() || l.HandedOff() != 0) {
				t.Errorf("on the loops %v, %d connections handed off; want true, 0", l.OnLoops(), l.HandedOff())
			}
			results[p.name] = res
		})
	}
	sameAnswersAsGoroutinePath(t, results)
}
