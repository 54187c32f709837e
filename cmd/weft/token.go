package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/weftmesh/weft/internal/api"
)

// runToken runs `weft token create`: it asks the server for a join token
// bound to one virtual node or gateway and prints it.
func runToken(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "create" {
		fmt.Fprintln(stderr, "usage: weft token create --resource mesh/<mesh>/virtualNode/<name> [--ttl 24h] [--endpoint-url URL]")
		return flag.ErrHelp
	}
	fs := flag.NewFlagSet("weft token create", flag.ContinueOnError)
	fs.SetOutput(stderr)
	resource := fs.String("resource", "", "virtual node or gateway: its ARN or mesh/<mesh>/virtualNode/<name> (required)")
	ttl := fs.Duration("ttl", 24*time.Hour, "how long the token is valid (at most 8784h)")
	endpoint := fs.String("endpoint-url", envOr("WEFT_ENDPOINT_URL", "http://127.0.0.1:9080"), "weft server's API (env WEFT_ENDPOINT_URL)")
	region := fs.String("region", envOr("AWS_REGION", envOr("AWS_DEFAULT_REGION", "us-east-1")), "region to sign for (env AWS_REGION)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *resource == "" {
		return errors.New("--resource is required")
	}
	body, err := json.Marshal(api.TokenRequest{Resource: *resource, TTL: ttl.String()})
	if err != nil {
		return err
	}
	b, err := callWeft(ctx, http.MethodPost, *endpoint, "/v1/tokens", body, *region)
	if err != nil {
		return fmt.Errorf("create token: %w", err)
	}
	var out api.TokenResponse
	if err := json.Unmarshal(b, &out); err != nil {
		return fmt.Errorf("create token: %w", err)
	}
	fmt.Fprintln(stdout, out.Token)
	fmt.Fprintf(stderr, "token for %s, valid until %s\n", out.Resource, out.ExpiresAt.Format(time.RFC3339))
	return nil
}
