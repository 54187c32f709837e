// Package e2e runs the seed tutorial ("App Mesh on Amazon ECS - Part 1",
// sections 1 to 4, then part 2's TLS with weft's CA) end to end: weft server in a network namespace, each ECS
// task a network namespace with the color app and weft proxy behind weft
// intercept, the mesh built with the AWS CLI from the tutorial's own JSON
// files, and every observable statement of the tutorial checked with real
// traffic.
//
// Run it alone, as root:
//
//	go test -count=1 -v ./test/e2e
package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// clientEnv, when set, turns the test binary into the traffic client that
// the test runs inside a task's namespace (ip netns exec), as the task's
// application: it resolves names through the namespace's resolv.conf and its
// connections are intercepted like the app's. Its value is the mode.
const clientEnv = "WEFT_E2E_CLIENT"

func TestMain(m *testing.M) {
	if mode := os.Getenv(clientEnv); mode != "" {
		if err := client(mode, os.Args[1:], os.Stdout); err != nil {
			fmt.Fprintf(os.Stderr, "e2e client %s: %v\n", mode, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// counts is what the count mode prints: how often each body came back.
type counts struct {
	Bodies     map[string]int `json:"bodies"`
	Errors     int            `json:"errors"`
	FirstError string         `json:"first_error,omitempty"`
	// Failures holds the first few failed requests' start times (UTC)
	// and errors, to line them up with the proxies' logs.
	Failures []string `json:"failures,omitempty"`
}

func (c counts) total() int {
	n := c.Errors
	for _, v := range c.Bodies {
		n += v
	}
	return n
}

// client runs one mode:
//
//	count URL N     N GETs, each on a new connection as curl makes them; prints counts as JSON
//	watch URL       GETs until killed, one line per request: "<unix nanos> ok <body>" or "<unix nanos> err <error>"
//	load URL RATE   GETs started at RATE per second until SIGTERM; prints counts as JSON
//	certinfo ADDR   the certificate a TLS server at ADDR presents, as JSON (certInfo)
func client(mode string, args []string, out io.Writer) error {
	// A new connection per request, like the tutorial's curl loop: a
	// configuration change must show on the next connection.
	hc := &http.Client{
		Timeout:   2 * time.Second,
		Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
	}
	get := func(url string) (string, error) {
		resp, err := hc.Get(url)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return "", err
		}
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("status %d: %q", resp.StatusCode, b)
		}
		return strings.TrimSpace(string(b)), nil
	}
	switch mode {
	case "count":
		if len(args) != 2 {
			return fmt.Errorf("want URL N, got %q", args)
		}
		n, err := strconv.Atoi(args[1])
		if err != nil {
			return err
		}
		c := counts{Bodies: map[string]int{}}
		for range n {
			body, err := get(args[0])
			if err != nil {
				if c.Errors == 0 {
					c.FirstError = err.Error()
				}
				c.Errors++
				continue
			}
			c.Bodies[body]++
		}
		return json.NewEncoder(out).Encode(c)
	case "load":
		if len(args) != 2 {
			return fmt.Errorf("want URL RATE, got %q", args)
		}
		rate, err := strconv.Atoi(args[1])
		if err != nil || rate <= 0 {
			return fmt.Errorf("rate %q: want a positive number", args[1])
		}
		return load(args[0], rate, get, out)
	case "certinfo":
		if len(args) != 1 {
			return fmt.Errorf("want ADDR, got %q", args)
		}
		return certinfo(args[0], out)
	case "watch":
		if len(args) != 1 {
			return fmt.Errorf("want URL, got %q", args)
		}
		for {
			body, err := get(args[0])
			now := time.Now().UnixNano()
			if err != nil {
				fmt.Fprintf(out, "%d err %s\n", now, strings.ReplaceAll(err.Error(), "\n", " "))
				// Not a sleep between assertions: a pause between
				// failed attempts so a refused connection does not
				// spin a core the proxies need.
				time.Sleep(10 * time.Millisecond)
				continue
			}
			fmt.Fprintf(out, "%d ok %s\n", now, body)
		}
	}
	return fmt.Errorf("unknown mode %q", mode)
}

// load starts one GET every 1/rate s until SIGTERM, at most 256 in flight
// (a request that would exceed that counts as an error: the proxies fell
// behind), then waits for those in flight and prints the counts.
func load(url string, rate int, get func(string) (string, error), out io.Writer) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var (
		mu sync.Mutex
		c  = counts{Bodies: map[string]int{}}
		wg sync.WaitGroup
	)
	record := func(start time.Time, body string, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			if c.Errors == 0 {
				c.FirstError = err.Error()
			}
			if len(c.Failures) < 20 {
				c.Failures = append(c.Failures, start.UTC().Format("15:04:05.000000")+" "+err.Error())
			}
			c.Errors++
			return
		}
		c.Bodies[body]++
	}
	slots := make(chan struct{}, 256)
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-tick.C:
			select {
			case slots <- struct{}{}:
			default:
				record(time.Now(), "", fmt.Errorf("256 requests in flight"))
				continue
			}
			wg.Add(1)
			go func() { // ends when the request does (the client's 2 s timeout)
				defer wg.Done()
				defer func() { <-slots }()
				start := time.Now()
				body, err := get(url)
				record(start, body, err)
			}()
		}
	}
	wg.Wait()
	return json.NewEncoder(out).Encode(c)
}

// certinfo prints the certificate the server at addr presents. It does not
// verify it and sends no client certificate: a server that requires one
// still shows its own before it refuses.
func certinfo(addr string, out io.Writer) error {
	d := &net.Dialer{Timeout: 5 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		return err
	}
	defer conn.Close()
	certs := conn.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return fmt.Errorf("%s presented no certificate", addr)
	}
	leaf := certs[0]
	info := struct {
		Serial    string    `json:"serial"`
		Issuer    string    `json:"issuer"`
		URIs      []string  `json:"uris"`
		DNSNames  []string  `json:"dns_names"`
		NotBefore time.Time `json:"not_before"`
		NotAfter  time.Time `json:"not_after"`
	}{Serial: leaf.SerialNumber.Text(16), Issuer: fmt.Sprintf("%x", leaf.AuthorityKeyId), DNSNames: leaf.DNSNames,
		NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter}
	for _, u := range leaf.URIs {
		info.URIs = append(info.URIs, u.String())
	}
	return json.NewEncoder(out).Encode(info)
}
