package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/weftmesh/weft/internal/netns"
)

// routeSpec is color-route's spec with the given weights for green and
// yellow: what the demo creates (4, 1) and what its printed update-route
// command sends.
func routeSpec(green, yellow int) obj {
	return obj{"priority": 1, "httpRoute": obj{
		"match": obj{"method": "GET", "port": 80, "prefix": "/"},
		"action": obj{"weightedTargets": []obj{
			{"virtualNode": "green", "weight": green, "port": 80},
			{"virtualNode": "yellow", "weight": yellow, "port": 80},
		}},
	}}
}

// updateRouteCommand is the AWS CLI command that sets color-route's
// weights through the API at endpoint.
func updateRouteCommand(endpoint string, green, yellow int) string {
	spec, _ := json.Marshal(routeSpec(green, yellow))
	return fmt.Sprintf("AWS_ACCESS_KEY_ID=%s AWS_SECRET_ACCESS_KEY=weft AWS_DEFAULT_REGION=%s aws appmesh update-route --endpoint-url %s "+
		"--mesh-name %s --virtual-router-name color-router --route-name color-route --spec '%s'", account, region, endpoint, meshName, spec)
}

// routeWeights reads color-route from the API and describes its weighted
// targets: "green weight 4, yellow weight 1 (80% / 20%)".
func routeWeights(ctx context.Context, c clients) (string, error) {
	var out struct {
		Spec struct {
			HTTPRoute struct {
				Action struct {
					WeightedTargets []struct {
						VirtualNode string
						Weight      int
					}
				}
			}
		}
	}
	path := meshPath("/v20190125/meshes/%s/virtualRouter/%s/routes/%s", "color-router", "color-route")
	if err := c.call(ctx, http.MethodGet, path, nil, nil, &out); err != nil {
		return "", fmt.Errorf("describe color-route: %w", err)
	}
	targets := out.Spec.HTTPRoute.Action.WeightedTargets
	total := 0
	for _, t := range targets {
		total += t.Weight
	}
	var names, shares []string
	for _, t := range targets {
		names = append(names, fmt.Sprintf("%s weight %d", t.VirtualNode, t.Weight))
		if total > 0 {
			shares = append(shares, fmt.Sprintf("%.0f%%", float64(t.Weight)*100/float64(total)))
		}
	}
	return fmt.Sprintf("%s (%s)", strings.Join(names, ", "), strings.Join(shares, " / ")), nil
}

// liveRoute keeps the route's description current, read once a second.
type liveRoute struct {
	mu   sync.Mutex
	text string // protected by mu
}

func (l *liveRoute) get() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.text
}

// follow reads the route until ctx ends.
func (l *liveRoute) follow(ctx context.Context, c clients) {
	for {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		text, err := routeWeights(rctx, c)
		cancel()
		if err != nil {
			text = "color-route: " + err.Error()
		} else {
			text = "color-route: " + text
		}
		l.mu.Lock()
		l.text = text
		l.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// maxAPIConns bounds the connections forwardAPI serves at once.
const maxAPIConns = 16

// forwardAPI makes the API inside h's namespace (to, an address there)
// reachable from this machine: it listens on a free loopback port and
// forwards each connection into the namespace. It returns the URL. The
// listener and the connections end with ps.ctx.
func forwardAPI(ps *procs, h *netns.Host, to string) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("API forwarder: %w", err)
	}
	ps.bg.Go(func() { <-ps.ctx.Done(); ln.Close() }) // ends when Run returns
	slots := make(chan struct{}, maxAPIConns)
	ps.bg.Go(func() { // ends when ln is closed
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			select {
			case slots <- struct{}{}:
			case <-ps.ctx.Done():
				c.Close()
				return
			}
			ps.bg.Go(func() { // ends when either side closes, or with ps.ctx
				defer func() { <-slots }()
				pipe(ps.ctx, c, h, to)
			})
		}
	})
	return "http://" + ln.Addr().String(), nil
}

// pipe copies between c and a new connection to `to` inside h until one
// side closes or ctx ends.
func pipe(ctx context.Context, c net.Conn, h *netns.Host, to string) {
	defer c.Close()
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	up, err := nsDial(dctx, h, "tcp", to)
	cancel()
	if err != nil {
		return
	}
	defer up.Close()
	stop := context.AfterFunc(ctx, func() { c.Close(); up.Close() })
	defer stop()
	done := make(chan struct{})
	go func() { // ends when c's reader side ends (either side closing ends both)
		io.Copy(up, c)
		up.(*net.TCPConn).CloseWrite()
		close(done)
	}()
	io.Copy(c, up)
	c.Close()
	<-done
}
