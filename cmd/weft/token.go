package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

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
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(*endpoint, "/")+"/v1/tokens", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	// Signed with the AWS credentials of the environment, as the AWS CLI
	// would sign: the server checks them when it has a credentials file.
	if id := os.Getenv("AWS_ACCESS_KEY_ID"); id != "" {
		sum := sha256.Sum256(body)
		creds := aws.Credentials{AccessKeyID: id, SecretAccessKey: os.Getenv("AWS_SECRET_ACCESS_KEY"), SessionToken: os.Getenv("AWS_SESSION_TOKEN")}
		if err := v4.NewSigner().SignHTTP(ctx, creds, req, hex.EncodeToString(sum[:]), "weft", *region, time.Now()); err != nil {
			return fmt.Errorf("sign: %w", err)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("create token: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("create token: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Message string `json:"message"`
		}
		json.Unmarshal(b, &e)
		return fmt.Errorf("create token: %s %s: %s", resp.Status, resp.Header.Get("x-amzn-ErrorType"), e.Message)
	}
	var out api.TokenResponse
	if err := json.Unmarshal(b, &out); err != nil {
		return fmt.Errorf("create token: %w", err)
	}
	fmt.Fprintln(stdout, out.Token)
	fmt.Fprintf(stderr, "token for %s, valid until %s\n", out.Resource, out.ExpiresAt.Format(time.RFC3339))
	return nil
}
