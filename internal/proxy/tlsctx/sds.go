package tlsctx

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
)

// secretType is the type URL of Envoy's Secret.
const secretType = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

// Limits of the SDS socket client.
const (
	sdsMaxMessage  = 4 << 20 // a response: certificates and bundles, not megabytes
	sdsBackoffBase = 500 * time.Millisecond
	sdsBackoffMax  = 30 * time.Second
)

// SDSClient fetches the store's FromSDS secrets from an SDS server on a
// Unix socket (envoy.service.secret.v3.SecretDiscoveryService
// StreamSecrets, state of the world), as Envoy fetched SPIRE's over
// APPMESH_SDS_SOCKET_PATH. Secrets may rotate at any time: each response
// replaces the material of the secrets it carries.
type SDSClient struct {
	path  string
	node  *corev3.Node
	store *Store
	log   *slog.Logger
	// OnUpdate, when set, is called after secrets were accepted.
	OnUpdate func()

	version string // last accepted; owned by Run
}

// NewSDSClient returns a client for the SDS server on the socket path.
func NewSDSClient(path string, node *corev3.Node, store *Store, log *slog.Logger) *SDSClient {
	return &SDSClient{path: path, node: node, store: store, log: log.With("sds_socket", path)}
}

// Run keeps a stream open while secrets are wanted, reconnecting with
// backoff, until ctx ends.
func (c *SDSClient) Run(ctx context.Context) {
	conn, err := grpc.NewClient("unix://"+c.path, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(sdsMaxMessage)))
	if err != nil {
		c.log.Error("SDS socket client", "err", err)
		return
	}
	defer conn.Close()
	client := secretv3.NewSecretDiscoveryServiceClient(conn)
	delay := sdsBackoffBase
	for {
		// Open a stream only when some secret is wanted.
		for len(c.store.Names(FromSDS)) == 0 {
			select {
			case <-ctx.Done():
				return
			case <-c.store.wanted:
			}
		}
		progressed, err := c.stream(ctx, client)
		if ctx.Err() != nil {
			return
		}
		if progressed {
			delay = sdsBackoffBase
		}
		wait := time.Duration(rand.Int64N(int64(delay))) + delay/2
		c.log.Warn("SDS stream ended; reconnecting", "err", err, "in", wait.Round(time.Millisecond))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		delay = min(delay*2, sdsBackoffMax)
	}
}

func (c *SDSClient) stream(ctx context.Context, client secretv3.SecretDiscoveryServiceClient) (progressed bool, err error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := client.StreamSecrets(sctx)
	if err != nil {
		return false, fmt.Errorf("open stream: %w", err)
	}
	type recv struct {
		resp *discoveryv3.DiscoveryResponse
		err  error
	}
	rc := make(chan recv, 1)
	go func() { // receives until the stream ends; ends when sctx is cancelled on return
		for {
			r, err := st.Recv()
			select {
			case rc <- recv{r, err}:
			case <-sctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	names := c.store.Names(FromSDS)
	nonce := ""
	send := func(nack error) error {
		req := &discoveryv3.DiscoveryRequest{VersionInfo: c.version, Node: c.node, TypeUrl: secretType,
			ResourceNames: names, ResponseNonce: nonce}
		if nack != nil {
			req.ErrorDetail = &statuspb.Status{Code: int32(codes.InvalidArgument), Message: nack.Error()}
		}
		return st.Send(req)
	}
	if err := send(nil); err != nil {
		return false, fmt.Errorf("send: %w", err)
	}
	for {
		select {
		case <-ctx.Done():
			return progressed, ctx.Err()
		case <-c.store.wanted:
			next := c.store.Names(FromSDS)
			if slices.Equal(next, names) {
				continue
			}
			names = next
			if err := send(nil); err != nil {
				return progressed, fmt.Errorf("send: %w", err)
			}
		case r := <-rc:
			if r.err != nil {
				return progressed, fmt.Errorf("receive: %w", r.err)
			}
			progressed = true
			nonce = r.resp.GetNonce()
			err := c.apply(r.resp, names)
			if err != nil {
				c.log.Warn("SDS update rejected", "version", r.resp.GetVersionInfo(), "err", err)
			} else {
				c.version = r.resp.GetVersionInfo()
				if c.OnUpdate != nil {
					c.OnUpdate()
				}
			}
			if err := send(err); err != nil {
				return progressed, fmt.Errorf("send: %w", err)
			}
		}
	}
}

// apply parses a response's secrets and installs those asked for.
func (c *SDSClient) apply(resp *discoveryv3.DiscoveryResponse, names []string) error {
	var secrets []*tlsv3.Secret
	for i, a := range resp.GetResources() {
		if a.GetTypeUrl() != secretType {
			return fmt.Errorf("resource %d: type %s in a secret response", i, a.GetTypeUrl())
		}
		sec := &tlsv3.Secret{}
		if err := a.UnmarshalTo(sec); err != nil {
			return fmt.Errorf("resource %d: %w", i, err)
		}
		if _, ok := slices.BinarySearch(names, sec.GetName()); ok {
			secrets = append(secrets, sec)
		}
	}
	ms, err := CheckSecrets(secrets)
	if err != nil {
		return err
	}
	return c.store.SetSecrets(FromSDS, resp.GetVersionInfo(), ms)
}
