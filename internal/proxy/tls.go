package proxy

import (
	"context"
	"fmt"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/weftmesh/weft/internal/proxy/listener"
	"github.com/weftmesh/weft/internal/proxy/stats"
	"github.com/weftmesh/weft/internal/proxy/tlsctx"
)

// downstreamTLS compiles a filter chain's transport socket: nil for none
// (or raw_buffer), else its DownstreamTlsContext with the listener's ssl.*
// stats.
func downstreamTLS(ts *corev3.TransportSocket, path, addr string, st *stats.Store, store *tlsctx.Store) (*tlsctx.Server, error) {
	m, err := tlsctx.Unpack(ts, path)
	if err != nil || m == nil {
		return nil, err
	}
	d, ok := m.(*tlsv3.DownstreamTlsContext)
	if !ok {
		return nil, fmt.Errorf("%s.typed_config: a listener filter chain takes a DownstreamTlsContext", path)
	}
	if store == nil {
		return nil, fmt.Errorf("%s: TLS is not available here", path)
	}
	name := listener.StatName(addr)
	sc := st.Scope("listener."+name+".ssl.", "envoy_listener_ssl_", stats.Label{Name: "envoy_listener_address", Value: name})
	return store.Server(d, path+".typed_config", tlsctx.NewStats(sc))
}

// SDSSocketMetadata is the node metadata key weft proxy sets when it
// serves agent secrets from an SDS socket: weft's translator then keeps
// sds.secretName on cluster static_cluster_sds_unix_socket instead of
// serving the secret over ADS.
const SDSSocketMetadata = "weft.sds_socket"

// IngressPortMetadata and EgressPortMetadata are the node metadata keys
// by which weft proxy names its interception ports (Config.IngressPort,
// EgressPort); weft server reads them (translate.IngressPortMetadataKey).
const (
	IngressPortMetadata = "weft.ingress_port"
	EgressPortMetadata  = "weft.egress_port"
)

// retainTLS keeps the files and secrets the accepted listeners and
// clusters use, and drops the rest. Called with mu.
func (p *Proxy) retainTLS() {
	p.tls.Retain(p.tlsRefs())
}

func (p *Proxy) tlsRefs() tlsctx.Refs {
	ls := make([]*listenerv3.Listener, 0, len(p.lpb))
	for _, l := range p.lpb {
		ls = append(ls, l)
	}
	all := p.clusters.All()
	cs := make([]*clusterv3.Cluster, 0, len(all))
	for _, c := range all {
		cs = append(cs, c.PB)
	}
	for _, c := range p.clusters.Warming() {
		cs = append(cs, c.PB)
	}
	return p.tls.Collect(ls, cs)
}

// SecretNames implements xdsclient.SecretHandler.
func (p *Proxy) SecretNames() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.tlsRefs().ADS
}

// Secrets implements xdsclient.SecretHandler (SDS over ADS): every secret
// is parsed before any is used; new handshakes use them at once.
func (p *Proxy) Secrets(ctx context.Context, version string, ss []*tlsv3.Secret) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	ms, err := tlsctx.CheckSecrets(ss)
	if err == nil {
		err = p.tls.SetSecrets(tlsctx.FromADS, version, ms)
	}
	if err != nil {
		return err
	}
	p.warm(false)
	p.accepted("sds", version)
	return nil
}

// sdsUpdated is called when the SDS socket delivered secrets.
func (p *Proxy) sdsUpdated() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.warm(false)
	p.checkLive()
}

// tlsReady reports whether every TLS context of a listener configuration
// has its secrets.
func tlsReady(cfg *listener.Config) bool {
	chains := make([]*listener.Chain, 0, len(cfg.Chains)+1)
	for i := range cfg.Chains {
		chains = append(chains, &cfg.Chains[i])
	}
	if cfg.Default != nil {
		chains = append(chains, cfg.Default)
	}
	for _, ch := range chains {
		if r, ok := ch.TLS.(interface{ Ready() bool }); ok && !r.Ready() {
			return false
		}
	}
	return true
}

// warm puts in force the warming listener and cluster updates whose
// secrets have arrived; after initialFetchTimeout, all of them (they then
// refuse their handshakes until the secrets come: never plaintext).
// Called with mu.
func (p *Proxy) warm(force bool) {
	for name, w := range p.warmL {
		if !force && !tlsReady(w.cfg) {
			continue
		}
		if l := p.listeners[name]; l != nil {
			l.Update(w.cfg, w.drainAll)
		}
		delete(p.warmL, name)
	}
	more := p.clusters.Warm(force) || len(p.warmL) > 0
	if more && p.warmTimer == nil {
		p.warmTimer = time.AfterFunc(initialFetchTimeout, func() { // one-shot; stopped by Run on exit
			p.mu.Lock()
			defer p.mu.Unlock()
			p.warmTimer = nil
			if len(p.warmL) > 0 || len(p.clusters.Warming()) > 0 {
				p.log.Warn("initial fetch timeout: TLS secrets missing; updated listeners and clusters refuse handshakes until they arrive")
			}
			p.warm(true)
		})
	}
}

// secretsArrived reports whether the secrets the configuration names have
// arrived, leaving out those whose initial_fetch_timeout passed; while
// some are awaited with a timeout it arms a timer to check again then.
// Called with mu.
func (p *Proxy) secretsArrived() bool {
	now := time.Now()
	ads, next1 := p.tls.Missing(tlsctx.FromADS, now)
	sds, next2 := p.tls.Missing(tlsctx.FromSDS, now)
	if len(ads)+len(sds) == 0 {
		return true
	}
	next := next1
	if next.IsZero() || (!next2.IsZero() && next2.Before(next)) {
		next = next2
	}
	if !next.IsZero() {
		if p.secretTimer != nil {
			p.secretTimer.Stop()
		}
		p.secretTimer = time.AfterFunc(time.Until(next), func() { // one-shot; stopped by Run on exit
			p.mu.Lock()
			defer p.mu.Unlock()
			p.checkLive()
		})
	}
	return false
}
