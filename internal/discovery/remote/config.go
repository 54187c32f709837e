// Package remote follows services of a remote Cloud Map (AWS Cloud Map, or
// another weft) that virtual nodes name in their awsCloudMap service
// discovery, and writes each service's last answer into the store under
// discovery.RemotePrefix, where internal/discovery resolves it in place of
// weft's own registry. The xDS and the rest of weft need no other hook:
// a changed record is a store change like any registration.
//
// Following is cheap: every interval, one DiscoverInstancesRevision per
// followed service, and DiscoverInstances only when the revision moved.
// When the remote cannot be reached the records stay as they are, so the
// proxies keep the last-known endpoints; the status (Handler, metrics)
// says which services are stale and why.
package remote

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Defaults of Config's limits.
const (
	// DefaultInterval is how often each followed service's revision is
	// asked for.
	DefaultInterval = 5 * time.Second
	// DefaultTimeout bounds each request to a remote, retries included.
	DefaultTimeout = 5 * time.Second
	// DefaultMaxServices bounds the services followed, over all remotes.
	DefaultMaxServices = 500
	// DefaultConcurrency bounds the requests in flight at once.
	DefaultConcurrency = 8
	// MaxInstances is the most instances one DiscoverInstances returns
	// (Cloud Map's own maximum); a service with more is followed with its
	// first MaxInstances and its status says it was truncated.
	MaxInstances = 1000
)

// Remote is one remote Cloud Map.
type Remote struct {
	// Name labels the remote in the status, metrics and store records.
	Name string
	// Endpoint overrides the Cloud Map endpoint (another weft, a local
	// emulator, a VPC endpoint); "" uses AWS's endpoint of Region. With an
	// override the SDK's "data-" host prefix for DiscoverInstances is not
	// added.
	Endpoint string
	// Region of the Cloud Map; "" takes it from the usual AWS settings
	// (AWS_REGION, the shared config file).
	Region string
	// Profile is a shared config profile to take credentials and region
	// from; "" uses the default credential chain (environment, shared
	// files, ECS task role, EC2 instance role, ...).
	Profile string
	// Namespaces are the namespace names resolved in this remote; "*"
	// alone means every namespace.
	Namespaces []string
}

// Config configures a Follower.
type Config struct {
	Remotes []Remote
	// Interval between two revision checks of a service
	// (DefaultInterval when 0).
	Interval time.Duration
	// Timeout of one request to a remote (DefaultTimeout when 0).
	Timeout time.Duration
	// MaxServices followed over all remotes (DefaultMaxServices when 0);
	// further services are not followed and the status names them.
	MaxServices int
	// Concurrency of requests (DefaultConcurrency when 0).
	Concurrency int
}

func (c Config) withDefaults() Config {
	if c.Interval <= 0 {
		c.Interval = DefaultInterval
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.MaxServices <= 0 {
		c.MaxServices = DefaultMaxServices
	}
	if c.Concurrency <= 0 {
		c.Concurrency = DefaultConcurrency
	}
	return c
}

// ParseRemote reads a remote from its flag form:
//
//	name=aws,region=eu-west-1,namespace=apps.local,namespace=jobs.local
//	endpoint=https://weft.example:9080,region=us-east-1,namespace=*
//
// Keys: name (default "remote"), endpoint, region, profile, and namespace
// (at least one; repeat it for several, "*" for all).
func ParseRemote(s string) (Remote, error) {
	r := Remote{Name: "remote"}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok || v == "" {
			return Remote{}, fmt.Errorf("cloud map remote %q: %q is not key=value", s, kv)
		}
		switch k {
		case "name":
			r.Name = v
		case "endpoint":
			u, err := url.Parse(v)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return Remote{}, fmt.Errorf("cloud map remote %q: endpoint %q is not an http(s) URL", s, v)
			}
			r.Endpoint = v
		case "region":
			r.Region = v
		case "profile":
			r.Profile = v
		case "namespace":
			r.Namespaces = append(r.Namespaces, v)
		default:
			return Remote{}, fmt.Errorf("cloud map remote %q: unknown key %q (name, endpoint, region, profile, namespace)", s, k)
		}
	}
	if len(r.Namespaces) == 0 {
		return Remote{}, fmt.Errorf("cloud map remote %q: give the namespaces it resolves: namespace=NAME (repeatable) or namespace=*", s)
	}
	if slices.Contains(r.Namespaces, "*") && len(r.Namespaces) > 1 {
		return Remote{}, fmt.Errorf("cloud map remote %q: namespace=* excludes other namespaces", s)
	}
	return r, nil
}

// check reports remotes that overlap: a namespace may be resolved by one
// remote only, and a name names one remote.
func (c Config) check() error {
	names := map[string]bool{}
	owner := map[string]string{}
	for _, r := range c.Remotes {
		if names[r.Name] {
			return fmt.Errorf("cloud map remote name %q given twice", r.Name)
		}
		names[r.Name] = true
		for _, ns := range r.Namespaces {
			if ns == "*" && len(c.Remotes) > 1 {
				return errors.New("cloud map remote with namespace=* must be the only remote")
			}
			if o, ok := owner[ns]; ok {
				return fmt.Errorf("cloud map namespace %q is given to remotes %q and %q", ns, o, r.Name)
			}
			owner[ns] = r.Name
		}
	}
	return nil
}

// remoteFor returns the index of the remote resolving a namespace, or -1.
func (c Config) remoteFor(ns string) int {
	for i, r := range c.Remotes {
		for _, n := range r.Namespaces {
			if n == "*" || n == ns {
				return i
			}
		}
	}
	return -1
}
