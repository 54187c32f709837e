package server

import (
	"github.com/weftmesh/weft/internal/discovery"
	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/xds/translate"
)

// CloudMap is the LoadDiscovery of weft's Cloud Map registry
// (internal/discovery).
func CloudMap(tx store.Tx, skip func(key string, err error)) (Discovery, error) {
	ix, err := discovery.Load(tx, 0, skip)
	if err != nil {
		return nil, err
	}
	return cloudMapIndex{ix}, nil
}

type cloudMapIndex struct{ ix *discovery.Index }

func (c cloudMapIndex) Apply(ch store.Change, skip func(key string, err error)) (Discovery, []CloudMapService) {
	next, changed := c.ix.Apply(ch, skip)
	out := make([]CloudMapService, len(changed))
	for i, r := range changed {
		out[i] = CloudMapService{Namespace: r.Namespace, Service: r.Service}
	}
	return cloudMapIndex{next}, out
}

func (c cloudMapIndex) Endpoints(namespace, service string, attributes map[string]string) []translate.Endpoint {
	eps := c.ix.Endpoints(namespace, service, attributes)
	if eps == nil {
		return nil
	}
	out := make([]translate.Endpoint, len(eps))
	for i, e := range eps {
		out[i] = translate.Endpoint{IPv4: e.IPv4, IPv6: e.IPv6, Port: e.Port}
	}
	return out
}
