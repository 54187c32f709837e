package xdsclient

import (
	"fmt"
	"net"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
)

// failoverConfig makes the channel use one server at a time, chosen at
// random among the addresses (so that proxies spread over the control
// plane's replicas), and move to another when it fails.
const failoverConfig = `{"loadBalancingConfig":[{"pick_first":{"shuffleAddressList":true}}]}`

// DialTarget turns Config.Server into a gRPC target. One host:port is
// resolved by gRPC's DNS resolver, so a name with several A records is
// several servers; a comma-separated list host:port,host:port,... is
// given to the channel as is. Either way the channel uses one server and
// fails over to another when it breaks.
func DialTarget(server string) (string, []grpc.DialOption, error) {
	var addrs []resolver.Address
	for _, a := range strings.Split(server, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		host, _, err := net.SplitHostPort(a)
		if err != nil {
			return "", nil, fmt.Errorf("xds address %q: %w", a, err)
		}
		// ServerName keeps TLS verifying each server by its own name.
		addrs = append(addrs, resolver.Address{Addr: a, ServerName: host})
	}
	switch len(addrs) {
	case 0:
		return "", nil, fmt.Errorf("xds address %q: want host:port[,host:port...]", server)
	case 1:
		return addrs[0].Addr, []grpc.DialOption{grpc.WithDefaultServiceConfig(failoverConfig)}, nil
	}
	r := manual.NewBuilderWithScheme("weft-xds")
	r.InitialState(resolver.State{Addresses: addrs})
	return r.Scheme() + ":///" + addrs[0].Addr, []grpc.DialOption{grpc.WithResolvers(r), grpc.WithDefaultServiceConfig(failoverConfig)}, nil
}
