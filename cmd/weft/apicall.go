package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// apiTimeout bounds one call to weft server's own endpoints.
const apiTimeout = 30 * time.Second

// callWeft calls one of weft server's own endpoints (path under /v1/) at
// endpoint (http://host:port) and returns the body of a 2xx answer, at most
// 1 MiB. The request is SigV4-signed with the environment's AWS
// credentials when there are any, as the AWS CLI signs: a server with a
// credentials file requires it (docs/security.md). An error answer is
// returned as an error carrying the status, x-amzn-ErrorType and message.
func callWeft(ctx context.Context, method, endpoint, path string, body []byte, region string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(endpoint, "/")+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if id := os.Getenv("AWS_ACCESS_KEY_ID"); id != "" {
		sum := sha256.Sum256(body)
		creds := aws.Credentials{AccessKeyID: id, SecretAccessKey: os.Getenv("AWS_SECRET_ACCESS_KEY"), SessionToken: os.Getenv("AWS_SESSION_TOKEN")}
		if err := v4.NewSigner().SignHTTP(ctx, creds, req, hex.EncodeToString(sum[:]), "weft", region, time.Now()); err != nil {
			return nil, fmt.Errorf("sign: %w", err)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Message string `json:"message"`
		}
		if json.Unmarshal(b, &e) != nil || e.Message == "" {
			e.Message = strings.TrimSpace(string(b))
		}
		return nil, fmt.Errorf("%s %s: %s", resp.Status, resp.Header.Get("x-amzn-ErrorType"), e.Message)
	}
	return b, nil
}
