package main

import (
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/weftmesh/weft/internal/discovery/remote"
	"github.com/weftmesh/weft/internal/server"
)

// remoteList is the repeatable --cloudmap-remote flag.
type remoteList []remote.Remote

func (l *remoteList) String() string { return "" }

func (l *remoteList) Set(s string) error {
	r, err := remote.ParseRemote(s)
	if err != nil {
		return err
	}
	*l = append(*l, r)
	return nil
}

// cloudMapRemoteFlags declares the flags of Cloud Map federation
// (internal/discovery/remote); the returned function completes cfg after
// Parse.
func cloudMapRemoteFlags(fs *flag.FlagSet, cfg *server.Config) func() error {
	var remotes remoteList
	var envErrs []error
	fs.Var(&remotes, "cloudmap-remote", "resolve awsCloudMap service discovery of some namespaces in a remote Cloud Map (AWS's, or another weft's), with the AWS SDK's default credential chain: "+
		"name=N,region=R,namespace=NS[,namespace=NS2|namespace=*][,endpoint=URL][,profile=P]; repeatable (env WEFT_CLOUDMAP_REMOTE, remotes separated by ';')")
	interval := fs.Duration("cloudmap-remote-interval", envDuration("WEFT_CLOUDMAP_REMOTE_INTERVAL", remote.DefaultInterval, &envErrs), "how often each followed remote service's revision is checked (env WEFT_CLOUDMAP_REMOTE_INTERVAL)")
	timeout := fs.Duration("cloudmap-remote-timeout", envDuration("WEFT_CLOUDMAP_REMOTE_TIMEOUT", remote.DefaultTimeout, &envErrs), "time limit of one request to a remote Cloud Map (env WEFT_CLOUDMAP_REMOTE_TIMEOUT)")
	maxServices := fs.Int("cloudmap-remote-max-services", remote.DefaultMaxServices, "most remote services followed; further ones are not, and GET /v1/discovery names them")
	return func() error {
		if err := errors.Join(envErrs...); err != nil {
			return err
		}
		if len(remotes) == 0 {
			for _, s := range strings.Split(envOr("WEFT_CLOUDMAP_REMOTE", ""), ";") {
				if s = strings.TrimSpace(s); s != "" {
					if err := remotes.Set(s); err != nil {
						return fmt.Errorf("WEFT_CLOUDMAP_REMOTE: %w", err)
					}
				}
			}
		}
		if *interval < time.Second || *timeout <= 0 || *maxServices <= 0 {
			return fmt.Errorf("--cloudmap-remote-interval (at least 1s), --cloudmap-remote-timeout and --cloudmap-remote-max-services must be positive")
		}
		cfg.CloudMapRemote = remote.Config{Remotes: remotes, Interval: *interval, Timeout: *timeout, MaxServices: *maxServices}
		return nil
	}
}
