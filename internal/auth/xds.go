package auth

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/xds/translate"
)

// StreamAction is the IAM action an xDS stream needs on its node's ARN.
const StreamAction = "appmesh:StreamAggregatedResources"

// XDS authorizes ADS streams: it is the Authorize hook of the xDS server.
type XDS struct {
	// Verifier checks SigV4 metadata; nil (no credentials file) ignores
	// SigV4 metadata, which proves nothing then.
	Verifier *Verifier
	// Tokens checks join tokens; nil refuses them.
	Tokens *Tokens
	// ClientCAs, when set, returns the pool that issued the client
	// certificates accepted as proof (weft's CA); the TLS listener
	// verifies them against the same pool.
	ClientCAs func() *x509.CertPool
	// TrustDomain, when set, is the SPIFFE trust domain a client
	// certificate's URI must be in.
	TrustDomain string
	// Region is the region of the node ARNs that policies name.
	Region string
	// Required refuses streams that prove nothing (with a credentials
	// file). Otherwise they are served, unproven.
	Required bool
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

// Authorize implements the xDS server's hook: it returns whether the
// stream proved it is id, or a gRPC status error (Unauthenticated,
// PermissionDenied) that closes the stream. A credential that is
// presented and wrong is always refused, even where none is required.
func (x *XDS) Authorize(ctx context.Context, id translate.Identity) (bool, error) {
	arn := appmesh.ARN(x.Region, appmesh.Ref{Owner: id.MeshOwner, Mesh: id.Mesh, Kind: id.Kind, Name: id.Name})
	if uri, ok := x.clientCertURI(ctx); ok {
		want := "/mesh/" + id.Mesh + "/" + string(id.Kind) + "/" + id.Name
		if uri.Path != want || (x.TrustDomain != "" && uri.Host != x.TrustDomain) {
			return false, status.Errorf(codes.PermissionDenied, "client certificate %s does not name %s", clip(uri.String()), arn)
		}
		return true, nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	authz := md.Get("authorization")
	if len(authz) > 1 {
		return false, status.Error(codes.Unauthenticated, "more than one authorization value")
	}
	switch {
	case len(authz) == 1 && hasPrefixFold(authz[0], "Bearer "):
		return x.token(strings.TrimSpace(authz[0][len("Bearer "):]), id, arn)
	case len(authz) == 1 && strings.HasPrefix(authz[0], Algorithm) && x.Verifier != nil:
		return x.sigv4(ctx, md, authz[0], arn)
	case x.Required:
		return false, status.Error(codes.Unauthenticated, "Missing Authentication Token")
	}
	// No credentials file: the stream is served unproven, and SigV4
	// metadata (which the App Mesh image always sends) is not checked.
	return false, nil
}

func hasPrefixFold(s, p string) bool {
	return len(s) >= len(p) && strings.EqualFold(s[:len(p)], p)
}

func (x *XDS) now() time.Time {
	if x.Now != nil {
		return x.Now()
	}
	return time.Now()
}

func (x *XDS) token(tok string, id translate.Identity, arn string) (bool, error) {
	if x.Tokens == nil {
		return false, status.Error(codes.Unauthenticated, "join tokens are not accepted here")
	}
	res, err := x.Tokens.Check(tok, x.now())
	if err != nil {
		return false, status.Error(codes.Unauthenticated, err.Error())
	}
	_, ref, err := appmesh.ParseARN(res)
	if err != nil || ref.Owner != id.MeshOwner || ref.Mesh != id.Mesh || ref.Kind != id.Kind || ref.Name != id.Name {
		return false, status.Errorf(codes.PermissionDenied, "the join token is for %s, not %s", res, arn)
	}
	return true, nil
}

// sigv4 checks metadata signed as Envoy's envoy.grpc_credentials.aws_iam
// plugin (which the App Mesh agent configures) signs it: a POST of the
// call's path (/envoy.service.discovery.v3.AggregatedDiscoveryService/
// StreamAggregatedResources) to the call's authority (without :443 over
// TLS), an empty payload, headers host, x-amz-content-sha256, x-amz-date
// and x-amz-security-token when the credentials have one.
func (x *XDS) sigv4(ctx context.Context, md metadata.MD, authz, arn string) (bool, error) {
	method, _ := grpc.Method(ctx)
	authority := first(md, ":authority")
	scheme := "http"
	if p, ok := peer.FromContext(ctx); ok {
		if _, tls := p.AuthInfo.(credentials.TLSInfo); tls {
			scheme = "https"
		}
	}
	hash := EmptySHA256
	if h := first(md, "x-amz-content-sha256"); h != "" {
		hash = h
	}
	key, err := x.Verifier.verify(ctx, authz, signed{
		method: "POST", scheme: scheme, host: authority, path: method,
		header:      func(name string) []string { return md.Get(name) },
		payloadHash: hash,
	})
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			return false, status.Error(codes.Unauthenticated, e.Message)
		}
		return false, status.Error(codes.Internal, err.Error())
	}
	if !key.Allowed(StreamAction, arn) {
		return false, status.Error(codes.PermissionDenied, Denied(key, StreamAction, arn).Message)
	}
	return true, nil
}

func first(md metadata.MD, k string) string {
	if vs := md.Get(k); len(vs) > 0 {
		return vs[0]
	}
	return ""
}

// clientCertURI returns the SPIFFE URI of the stream's client certificate
// when the TLS handshake verified it against ClientCAs.
func (x *XDS) clientCertURI(ctx context.Context) (*url.URL, bool) {
	if x.ClientCAs == nil {
		return nil, false
	}
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, false
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.PeerCertificates) == 0 {
		return nil, false
	}
	for _, u := range ti.State.PeerCertificates[0].URIs {
		if u.Scheme == "spiffe" {
			return u, true
		}
	}
	return &url.URL{Scheme: "spiffe", Path: "(none)"}, true
}

// String describes the mode, for the start-up log.
func (x *XDS) String() string {
	var kinds []string
	if x.Verifier != nil {
		kinds = append(kinds, "sigv4")
	}
	if x.Tokens != nil {
		kinds = append(kinds, "join-token")
	}
	if x.ClientCAs != nil {
		kinds = append(kinds, "client-cert")
	}
	return fmt.Sprintf("required=%t proofs=%s", x.Required, strings.Join(kinds, ","))
}
