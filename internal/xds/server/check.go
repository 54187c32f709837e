package server

import (
	"crypto/sha256"
	"errors"
	"fmt"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/internal/xds/translate"
)

// Validating a batch's results (the core's work, compute.go): each
// distinct resource once, then each result's references.

// checkJob is one translate.CheckResource call, shared by every item
// with the same content and gRPC flag.
type checkJob struct {
	msg   proto.Message
	grpc  bool
	facts translate.Facts
	err   error
}

type checkKey struct {
	sum  [sha256.Size]byte
	grpc bool
}

// check validates the results: translate.CheckResource, the costly part,
// once per distinct resource (by content and gRPC flag) that no interned
// entry has been checked as, in parallel; then translate.CheckRefs on each
// result. A result that fails gets err and is not installed.
func (c *machine) check(results []result) {
	if c.checkResource == nil {
		return
	}
	jobs := map[checkKey]*checkJob{}
	var list []*checkJob
	for i := range results {
		r := &results[i]
		if r.err != nil || r.closeErr != nil || r.secretsOnly {
			continue
		}
		for t := range numTypes {
			if t == typeSecret || r.same[t] {
				continue // built after the checks, from the CA; checked before
			}
			for j := range r.items[t] {
				it := &r.items[t][j]
				if it.facts != nil {
					continue
				}
				k := checkKey{it.sum, r.grpc}
				job := jobs[k]
				if job == nil {
					job = &checkJob{msg: it.msg, grpc: r.grpc}
					jobs[k] = job
					list = append(list, job)
				}
				it.check = job
			}
		}
	}
	check := c.checkResource
	if c.checkAssembled != nil {
		// Route tables made of shared hosts: each host once per batch.
		hosts := translate.NewHostChecks()
		check = func(m proto.Message, grpc bool) (translate.Facts, error) {
			if rc, ok := m.(*routev3.RouteConfiguration); ok {
				return c.checkAssembled(hosts, rc, grpc)
			}
			return c.checkResource(m, grpc)
		}
	}
	c.run(len(list), func(_, i int) { list[i].run(check) })
	c.metrics.checks.Add(float64(len(list)))
	for i := range results {
		r := &results[i]
		if r.err != nil || r.closeErr != nil || r.secretsOnly {
			continue
		}
		var errs []error
		for t := range numTypes {
			for j := range r.items[t] {
				if it := &r.items[t][j]; it.check != nil {
					if it.check.err != nil {
						errs = append(errs, it.check.err)
					}
					it.facts = &it.check.facts
				}
			}
		}
		// A result whose route tables say what the previous ones said
		// (names, ports, route and cluster references) and whose other
		// types are the previous ones has the Summary that passed
		// before: CheckRefs is a function of it.
		if c.checkRefs != nil && len(errs) == 0 && !(r.routesOnly && sameRouteFacts(r)) {
			errs = append(errs, c.checkRefs(r.summary()))
		}
		if err := errors.Join(errs...); err != nil {
			r.err = fmt.Errorf("validate: %w", err)
		}
	}
}

// summary is r's resources as translate.CheckRefs sees them (after
// check filled their facts).
func (r *result) summary() translate.Summary {
	var s translate.Summary
	lists := [numTypes]*[]*translate.Facts{
		typeCluster: &s.Clusters, typeEndpoint: &s.Endpoints, typeListener: &s.Listeners, typeRoute: &s.Routes,
	}
	g := index(r.grpc)
	for t := range numTypes {
		if lists[t] == nil {
			continue // secrets: not checked
		}
		if r.same[t] {
			old := r.prev.types[t].entries
			*lists[t] = make([]*translate.Facts, len(old))
			for j, e := range old {
				(*lists[t])[j] = e.facts[g]
			}
			continue
		}
		*lists[t] = make([]*translate.Facts, len(r.items[t]))
		for j := range r.items[t] {
			(*lists[t])[j] = r.items[t][j].facts
		}
	}
	return s
}

// run calls check on the job's resource; a panic is the job's error, as
// a translator's is the translation's.
func (j *checkJob) run(check func(proto.Message, bool) (translate.Facts, error)) {
	defer func() {
		if p := recover(); p != nil {
			j.err = fmt.Errorf("check panicked: %v", p)
		}
	}()
	j.facts, j.err = check(j.msg, j.grpc)
}
