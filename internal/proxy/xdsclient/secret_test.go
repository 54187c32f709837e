package xdsclient_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/weftmesh/weft/internal/proxy/xdsclient"
	"github.com/weftmesh/weft/internal/proxy/xdstest"
)

// secretHandler also takes secrets: every cluster needs the secret named
// "s-" + its name; a secret named "s-evil" is rejected.
type secretHandler struct {
	handler
	smu   sync.Mutex
	names []string
}

func (h *secretHandler) Clusters(ctx context.Context, v string, cs []*clusterv3.Cluster) ([]string, error) {
	names, err := h.handler.Clusters(ctx, v, cs)
	if err == nil {
		h.smu.Lock()
		h.names = nil
		for _, n := range names {
			h.names = append(h.names, "s-"+n)
		}
		h.smu.Unlock()
	}
	return names, err
}

func (h *secretHandler) SecretNames() []string {
	h.smu.Lock()
	defer h.smu.Unlock()
	return slices.Clone(h.names)
}

func (h *secretHandler) Secrets(_ context.Context, v string, ss []*tlsv3.Secret) error {
	var names []string
	for _, s := range ss {
		if s.GetName() == "s-evil" {
			return errors.New("secret s-evil: rejected")
		}
		names = append(names, s.GetName())
	}
	h.add(fmt.Sprintf("SDS %s %v", v, names))
	return nil
}

func TestSecretSubscription(t *testing.T) {
	srv := xdstest.Start(t, "n1")
	h := &secretHandler{}
	c := xdsclient.New(xdsclient.Config{Server: srv.Addr, Node: &corev3.Node{Id: "n1"}, BackoffBase: 10 * time.Millisecond}, h,
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }() // ends with cancel below
	defer func() { cancel(); <-done }()

	secret := func(n string) *tlsv3.Secret {
		return &tlsv3.Secret{Name: n, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{}}}
	}
	v := srv.Set(&clusterv3.Cluster{Name: "a"}, &clusterv3.Cluster{Name: "b"}, secret("s-a"), secret("s-b"), secret("s-other"))
	srv.WaitFor(10*time.Second, "secret subscription", func(r xdstest.Request) bool {
		return r.TypeURL == xdsclient.SecretType && strings.Join(r.Names, ",") == "s-a,s-b"
	})
	srv.WaitACK(xdsclient.SecretType, v)

	// A cluster goes: its secret is no longer asked for.
	v = srv.Set(&clusterv3.Cluster{Name: "a"}, secret("s-a"))
	srv.WaitACK(xdsclient.ClusterType, v)
	srv.WaitFor(10*time.Second, "narrowed subscription", func(r xdstest.Request) bool {
		return r.TypeURL == xdsclient.SecretType && strings.Join(r.Names, ",") == "s-a"
	})

	// A secret the handler rejects is NACKed with its message.
	mark := srv.Mark()
	srv.Set(&clusterv3.Cluster{Name: "a"}, &clusterv3.Cluster{Name: "evil"}, secret("s-a"), secret("s-evil"))
	srv.WaitSince(mark, 10*time.Second, "secret NACK", func(r xdstest.Request) bool {
		return r.TypeURL == xdsclient.SecretType && strings.Contains(r.Error, "secret s-evil: rejected")
	})
}
