package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// With -access-log, haproxy logs too, on a path of its own ("haproxy,
// access log"), so that logging is compared like for like: each request
// is one line on haproxy's stdout (`log stdout format raw`, no syslog
// daemon), in a format close to Envoy's default that weft proxies write:
//
//	Envoy: [%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%"
//	       %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION%
//	       %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%"
//	       "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"
//	haproxy: [%tr] "%HM %HPO %HV" %ST %tsc %U %B %Ta %Tr "<x-forwarded-for>" "<user-agent>"
//	       "<x-request-id>" "<host>" "%si:%sp"
//
// The start time (haproxy's has no time zone), the termination state (4
// characters where Envoy prints "-") and the headers (captured, at most 128
// bytes each) differ in form, not in what is looked up per request. The
// "haproxy" path, without a log, stays for reference. The bench keeps every
// process's output in its temporary directory, and logBytes prints each
// log's size per line at the end.

// accessLogPath starts the path "haproxy, access log" in front of the app.
func (b *bench) accessLogPath(app string) target {
	pHL := freePort()
	procHL := b.startHAProxyLogged(pHL, app)
	waitHTTP(fmt.Sprintf("http://127.0.0.1:%d/", pHL))
	return target{"haproxy, access log", fmt.Sprintf("http://127.0.0.1:%d/", pHL), []*os.Process{procHL}, nil}
}

// startHAProxyLogged runs haproxy as startHAProxy does, with the log.
func (b *bench) startHAProxyLogged(port int, app string) *os.Process {
	return b.runHAProxy(fmt.Sprintf("haproxy-logged-%d.cfg", port), haproxyLoggedConfig(fmt.Sprintf("127.0.0.1:%d", port), app))
}

// haproxyLoggedConfig is haproxyConfig with the access log.
func haproxyLoggedConfig(bind, server string) string {
	return fmt.Sprintf(`global
  maxconn 4096
  log stdout format raw local0
defaults
  mode http
  log global
  timeout connect 1s
  timeout client 30s
  timeout server 15s
  option http-keep-alive
  http-reuse always
frontend fe
  bind %s
  capture request header X-Forwarded-For len 128
  capture request header User-Agent len 128
  capture request header X-Request-Id len 128
  capture request header Host len 128
  log-format "[%%tr] \"%%HM %%HPO %%HV\" %%ST %%tsc %%U %%B %%Ta %%Tr \"%%[capture.req.hdr(0)]\" \"%%[capture.req.hdr(1)]\" \"%%[capture.req.hdr(2)]\" \"%%[capture.req.hdr(3)]\" \"%%si:%%sp\""
  default_backend app
backend app
  server app %s
`, bind, server)
}

// logBytes prints, for each process output in the bench's directory that
// holds access log lines (a line starting with "["), how many lines and
// bytes per line: what each proxy writes per request.
func (b *bench) logBytes() {
	files, _ := filepath.Glob(filepath.Join(b.dir, "*.log"))
	sort.Strings(files)
	fmt.Printf("\n| output | access log lines | bytes per line | a line |\n|---|---|---|---|\n")
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		lines, size, sample := 0, 0, ""
		for _, l := range bytes.Split(data, []byte("\n")) {
			if len(l) == 0 || l[0] != '[' {
				continue
			}
			lines++
			size += len(l) + 1
			if sample == "" {
				sample = strings.ReplaceAll(string(l), "|", `\|`)
			}
		}
		if lines > 0 {
			fmt.Printf("| %s | %d | %.1f | `%s` |\n", filepath.Base(f), lines, float64(size)/float64(lines), sample)
		}
	}
}
