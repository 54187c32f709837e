package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"sync"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/internal/proxy/xdsclient"
)

// firstRequest is stream i's subscription: its node and the route table.
func firstRequest(i int) *discovery.DiscoveryRequest {
	return &discovery.DiscoveryRequest{
		Node:          &core.Node{Id: fmt.Sprintf("mesh/bench/virtualNode/client-%d", i), Cluster: "bench"},
		TypeUrl:       resource.RouteType,
		ResourceNames: []string{"rds_egress_http_8080"},
	}
}

// ackOf is the ACK of resp.
func ackOf(resp *discovery.DiscoveryResponse) *discovery.DiscoveryRequest {
	return &discovery.DiscoveryRequest{VersionInfo: resp.GetVersionInfo(), TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()}
}

// dialParallel runs dial(i) for i in [0, n) on a few goroutines and
// returns the first error.
func dialParallel(n int, dial func(i int) error) error {
	const dialers = 8
	var wg sync.WaitGroup
	errs := make(chan error, dialers)
	for w := range dialers {
		wg.Add(1)
		go func() { // ends when its share is dialled or one fails
			defer wg.Done()
			for i := w; i < n; i += dialers {
				if err := dial(i); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// grpcClients opens n ADS streams to addr, one grpc-go connection each,
// dialled as weft proxy dials (xdsclient.WindowOptions), each ACKing
// every response on its own goroutine until ctx ends. close closes the
// connections.
func grpcClients(ctx context.Context, addr string, n int) (close func(), err error) {
	conns := make([]*grpc.ClientConn, n)
	closeAll := func() {
		for _, cc := range conns {
			if cc != nil {
				cc.Close()
			}
		}
	}
	err = dialParallel(n, func(i int) error {
		opts := append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, xdsclient.WindowOptions()...)
		cc, err := grpc.NewClient(addr, opts...)
		if err != nil {
			return err
		}
		conns[i] = cc
		st, err := discovery.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
		if err != nil {
			return fmt.Errorf("stream %d: %w", i, err)
		}
		if err := st.Send(firstRequest(i)); err != nil {
			return fmt.Errorf("stream %d: %w", i, err)
		}
		go func() { // ends when ctx ends or the connection closes
			resp := &discovery.DiscoveryResponse{}
			for {
				if err := st.RecvMsg(resp); err != nil {
					return
				}
				if err := st.Send(ackOf(resp)); err != nil {
					return
				}
			}
		}()
		return nil
	})
	if err != nil {
		closeAll()
		return nil, err
	}
	return closeAll, nil
}

// tcpClients opens n plain TCP connections to addr speaking the
// length-prefixed messages of serveTCP, each ACKing every response on
// its own goroutine. close closes the connections.
func tcpClients(addr string, n int) (close func(), err error) {
	conns := make([]net.Conn, n)
	closeAll := func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}
	err = dialParallel(n, func(i int) error {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return err
		}
		conns[i] = c
		if err := writeMessage(c, nil, firstRequest(i)); err != nil {
			return err
		}
		go func() { // ends when the connection closes
			var buf, out []byte
			br := bufio.NewReader(c)
			resp := &discovery.DiscoveryResponse{}
			for {
				msg, err := readFramed(br, &buf)
				if err != nil {
					return
				}
				if err := proto.Unmarshal(msg, resp); err != nil {
					return
				}
				if err := writeMessage(c, out, ackOf(resp)); err != nil {
					return
				}
			}
		}()
		return nil
	})
	if err != nil {
		closeAll()
		return nil, err
	}
	return closeAll, nil
}

// writeMessage writes m length-prefixed with one write, using buf's space.
func writeMessage(c net.Conn, buf []byte, m proto.Message) error {
	b := appendFramed(buf[:0], proto.Size(m))
	b, err := proto.MarshalOptions{}.MarshalAppend(b, m)
	if err != nil {
		return err
	}
	_, err = c.Write(b)
	return err
}
