package proxy

import (
	"fmt"
	"net"
	"strconv"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	originaldstv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/internal/proxy/cluster"
	"github.com/weftmesh/weft/internal/proxy/httpconn"
	"github.com/weftmesh/weft/internal/proxy/listener"
	"github.com/weftmesh/weft/internal/proxy/strict"
	"github.com/weftmesh/weft/internal/proxy/tcpproxy"
	"github.com/weftmesh/weft/internal/proxy/tlsctx"
)

// buildListener compiles a Listener into a listener.Config and the RDS
// names its connection managers use.
func buildListener(l *listenerv3.Listener, deps httpconn.Deps, clusters *cluster.Manager, ts *tlsctx.Store) (*listener.Config, []string, error) {
	path := "listener " + l.GetName()
	// traffic_direction, metadata, stat_prefix, drain_type and the buffer
	// limit have no behaviour in weft proxy beyond what it does anyway.
	if err := strict.Fields(l, path, "name", "address", "stat_prefix", "filter_chains",
		"default_filter_chain", "metadata", "drain_type", "listener_filters",
		"listener_filters_timeout", "continue_on_listener_filters_timeout", "traffic_direction",
		"per_connection_buffer_limit_bytes", "bind_to_port"); err != nil {
		return nil, nil, err
	}
	if b := l.GetBindToPort(); b != nil && !b.GetValue() {
		return nil, nil, strict.Value(path, "bind_to_port", false, "every listener binds its address")
	}
	a := l.GetAddress()
	if err := strict.Fields(a, path+".address", "socket_address"); err != nil {
		return nil, nil, err
	}
	sa := a.GetSocketAddress()
	if sa == nil {
		return nil, nil, fmt.Errorf("%s: address.socket_address is required", path)
	}
	if err := strict.Fields(sa, path+".address.socket_address", "protocol", "address", "port_value", "ipv4_compat"); err != nil {
		return nil, nil, err
	}
	if sa.GetProtocol() != 0 {
		return nil, nil, strict.Value(path, "address.socket_address.protocol", sa.GetProtocol(), "TCP only")
	}
	if net.ParseIP(sa.GetAddress()) == nil {
		return nil, nil, fmt.Errorf("%s: address %q is not an IP address", path, sa.GetAddress())
	}
	cfg := &listener.Config{Name: l.GetName(), Addr: net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue()))),
		FiltersTimeout: 15 * time.Second, ContinueTimeout: l.GetContinueOnListenerFiltersTimeout()}
	if t := l.GetListenerFiltersTimeout(); t != nil {
		cfg.FiltersTimeout = t.AsDuration()
	}
	tlsInspector := false
	for i, f := range l.GetListenerFilters() {
		fp := strict.Join(path, "listener_filters", i)
		if err := strict.Fields(f, fp, "name", "typed_config", "filter_disabled"); err != nil {
			return nil, nil, err
		}
		var disabled listener.Predicate
		if fd := f.GetFilterDisabled(); fd != nil {
			var err error
			if disabled, err = listener.CompilePredicate(fd, fp+".filter_disabled"); err != nil {
				return nil, nil, err
			}
		}
		kind := f.GetName()
		if tc := f.GetTypedConfig(); tc != nil {
			m, err := tc.UnmarshalNew()
			if err != nil {
				return nil, nil, fmt.Errorf("%s: %w", fp, err)
			}
			switch x := m.(type) {
			case *originaldstv3.OriginalDst:
				if err := strict.Fields(x, fp+".typed_config"); err != nil {
					return nil, nil, err
				}
				kind = "envoy.filters.listener.original_dst"
			case *tlsinspectorv3.TlsInspector:
				// enable_ja3_fingerprinting and friends only add data.
				kind = "envoy.filters.listener.tls_inspector"
			default:
				return nil, nil, fmt.Errorf("%s: listener filter %s is not supported by weft proxy", fp, proto.MessageName(m))
			}
		}
		switch kind {
		case "envoy.filters.listener.original_dst", "envoy.listener.original_dst":
			if disabled != nil {
				return nil, nil, &strict.UnsupportedError{Path: fp, Field: "filter_disabled"}
			}
			cfg.OriginalDst = true
		case "envoy.filters.listener.tls_inspector", "envoy.listener.tls_inspector":
			tlsInspector = true
			cfg.TLSDisabled = disabled
		default:
			return nil, nil, fmt.Errorf("%s: listener filter %q is not supported by weft proxy", fp, kind)
		}
	}
	var rds []string
	build := func(fc *listenerv3.FilterChain, fp string) (*listener.Chain, error) {
		// name and metadata label the chain only.
		if err := strict.Fields(fc, fp, "filter_chain_match", "filters", "metadata", "name", "transport_socket"); err != nil {
			return nil, err
		}
		tls, err := downstreamTLS(fc.GetTransportSocket(), fp+".transport_socket", cfg.Addr, deps.Stats, ts)
		if err != nil {
			return nil, err
		}
		m, err := listener.CompileMatch(fc.GetFilterChainMatch(), fp+".filter_chain_match")
		if err != nil {
			return nil, err
		}
		if m.NeedsTLSInspection() {
			if !tlsInspector {
				return nil, fmt.Errorf("%s: matching on server_names or transport_protocol needs the tls_inspector listener filter", fp)
			}
			cfg.InspectTLS = true
		}
		fs := fc.GetFilters()
		if len(fs) != 1 {
			return nil, fmt.Errorf("%s: weft proxy takes exactly one network filter per chain (http_connection_manager or tcp_proxy), got %d", fp, len(fs))
		}
		f := fs[0]
		nfp := strict.Join(fp, "filters", 0)
		if err := strict.Fields(f, nfp, "name", "typed_config"); err != nil {
			return nil, err
		}
		if f.GetTypedConfig() == nil {
			return nil, fmt.Errorf("%s: typed_config is required", nfp)
		}
		msg, err := f.GetTypedConfig().UnmarshalNew()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", nfp, err)
		}
		ch := &listener.Chain{Name: fc.GetName(), Match: m, Source: fc}
		if tls != nil {
			ch.TLS = tls
		}
		switch x := msg.(type) {
		case *hcmv3.HttpConnectionManager:
			h, err := httpconn.Build(x, nfp+".typed_config", deps)
			if err != nil {
				return nil, err
			}
			if h.RDS != "" {
				rds = append(rds, h.RDS)
			}
			ch.Handler = h
		case *tcpv3.TcpProxy:
			logs, err := httpconn.BuildAccessLogs(deps.Sinks, x.GetAccessLog(), nfp+".typed_config")
			if err != nil {
				return nil, err
			}
			t, err := tcpproxy.New(x, nfp+".typed_config", clusters, logs, deps.Stats)
			if err != nil {
				return nil, err
			}
			ch.Handler = t
		default:
			return nil, fmt.Errorf("%s: network filter %s is not supported by weft proxy", nfp, proto.MessageName(msg))
		}
		return ch, nil
	}
	for i, fc := range l.GetFilterChains() {
		ch, err := build(fc, strict.Join(path, "filter_chains", i))
		if err != nil {
			return nil, nil, err
		}
		cfg.Chains = append(cfg.Chains, *ch)
	}
	if fc := l.GetDefaultFilterChain(); fc != nil {
		ch, err := build(fc, path+".default_filter_chain")
		if err != nil {
			return nil, nil, err
		}
		cfg.Default = ch
	}
	if len(cfg.Chains) == 0 && cfg.Default == nil {
		return nil, nil, fmt.Errorf("%s: no filter chains", path)
	}
	if err := cfg.Prepare(); err != nil {
		return nil, nil, err
	}
	return cfg, rds, nil
}
