package xdsclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// maxTokenFile bounds a join token file.
const maxTokenFile = 4096

// TokenFile is gRPC call credentials that send the join token in a file
// as `authorization: Bearer <token>`. The file is read at each stream's
// start, so a renewed token is used from the next reconnection on.
type TokenFile struct {
	Path string
	// Secure requires a TLS connection to send the token.
	Secure bool
}

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (t TokenFile) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	f, err := os.Open(t.Path)
	if err != nil {
		return nil, fmt.Errorf("xds token: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxTokenFile+1))
	if err != nil {
		return nil, fmt.Errorf("xds token: %w", err)
	}
	tok := bytes.TrimSpace(b)
	if len(b) > maxTokenFile || len(tok) == 0 || bytes.ContainsAny(tok, " \t\r\n") {
		return nil, fmt.Errorf("xds token %s: want one token of at most %d bytes", t.Path, maxTokenFile)
	}
	return map[string]string{"authorization": "Bearer " + string(tok)}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials.
func (t TokenFile) RequireTransportSecurity() bool { return t.Secure }

// TLSOptions are the dial options of ADS over TLS: caFile (PEM) is the
// CA to trust, certFile and keyFile an optional client certificate.
func TLSOptions(caFile, certFile, keyFile string) ([]grpc.DialOption, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("xds ca: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("xds ca %s: no PEM certificate", caFile)
		}
	}
	switch {
	case certFile != "" && keyFile != "":
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("xds client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	case certFile != "" || keyFile != "":
		return nil, errors.New("xds client certificate: give both a certificate and a key")
	}
	return []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(tc))}, nil
}
