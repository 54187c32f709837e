package stsapi_test

import (
	"context"
	"encoding/xml"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"

	"github.com/weftmesh/weft/internal/api"
	"github.com/weftmesh/weft/internal/api/meshapi"
	"github.com/weftmesh/weft/internal/api/stsapi"
	"github.com/weftmesh/weft/internal/appmesh/ops"
	"github.com/weftmesh/weft/internal/store/bolt"
)

const defaultAccount = "111122223333"

// startAPI serves the API listener's routing with the App Mesh API (whose
// caller rule STS answers) and STS, as weft server wires them.
func startAPI(t *testing.T, region string) string {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "weft.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	log := slog.New(slog.DiscardHandler)
	mesh := meshapi.New(ops.New(st, ops.Config{Region: region}, log), meshapi.Config{DefaultAccount: defaultAccount}, log)
	srv := httptest.NewServer(&api.Handler{
		AppMesh: mesh,
		STS:     stsapi.New(stsapi.Config{Region: region, Account: mesh.CallerAccount}, log),
	})
	t.Cleanup(srv.Close)
	return srv.URL
}

func client(endpoint, keyID, region string) *sts.Client {
	return sts.New(sts.Options{
		Region:       region,
		BaseEndpoint: aws.String(endpoint),
		Credentials:  credentials.NewStaticCredentialsProvider(keyID, "secret", ""),
	})
}

// TestGetCallerIdentitySDK asks who calls with aws-sdk-go-v2's STS client:
// an access key id of 12 digits is that account, any other the server's.
func TestGetCallerIdentitySDK(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		region, keyID, account, arn string
	}{
		{"us-east-1", "weft", defaultAccount, "arn:aws:iam::111122223333:root"},
		{"us-east-1", "444455556666", "444455556666", "arn:aws:iam::444455556666:root"},
		{"cn-north-1", "AKIAIOSFODNN7EXAMPLE", defaultAccount, "arn:aws-cn:iam::111122223333:root"},
	} {
		out, err := client(startAPI(t, c.region), c.keyID, c.region).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
		if err != nil {
			t.Fatalf("%s key %s: %v", c.region, c.keyID, err)
		}
		if aws.ToString(out.Account) != c.account || aws.ToString(out.Arn) != c.arn || aws.ToString(out.UserId) != c.account {
			t.Errorf("%s key %s: account %q arn %q user %q; want %s %s", c.region, c.keyID, aws.ToString(out.Account), aws.ToString(out.Arn), aws.ToString(out.UserId), c.account, c.arn)
		}
	}
}

// TestOtherActionsSDK: STS operations weft does not serve fail with STS's
// error shape, which the SDK parses into its code.
func TestOtherActionsSDK(t *testing.T) {
	_, err := client(startAPI(t, "us-east-1"), "weft", "us-east-1").AssumeRole(context.Background(), &sts.AssumeRoleInput{
		RoleArn: aws.String("arn:aws:iam::111122223333:role/x"), RoleSessionName: aws.String("s"),
	})
	var apiErr smithy.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode() != "InvalidAction" || !strings.Contains(apiErr.ErrorMessage(), "AssumeRole") {
		t.Fatalf("AssumeRole: %v; want InvalidAction naming it", err)
	}
}

var requestID = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// TestWire checks the bytes: the answer's XML as STS writes it, and each
// refusal in the query protocol's error shape with STS's code.
func TestWire(t *testing.T) {
	base := startAPI(t, "us-east-1")
	post := func(body, contentType string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest("POST", base+"/", strings.NewReader(body))
		req.Header.Set("Content-Type", contentType)
		req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=444455556666/20260101/us-east-1/sts/aws4_request, SignedHeaders=host, Signature=00")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		return res, string(b)
	}

	res, body := post("Action=GetCallerIdentity&Version=2011-06-15", "application/x-www-form-urlencoded; charset=utf-8")
	id := res.Header.Get("x-amzn-RequestId")
	want := `<?xml version="1.0" encoding="UTF-8"?>` + "\n" +
		`<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">` +
		`<GetCallerIdentityResult><Arn>arn:aws:iam::444455556666:root</Arn><UserId>444455556666</UserId><Account>444455556666</Account></GetCallerIdentityResult>` +
		`<ResponseMetadata><RequestId>` + id + `</RequestId></ResponseMetadata></GetCallerIdentityResponse>` + "\n"
	if res.StatusCode != 200 || body != want || !requestID.MatchString(id) || res.Header.Get("Content-Type") != "text/xml" {
		t.Errorf("GetCallerIdentity: %d %s\n%s\nwant\n%s", res.StatusCode, res.Header, body, want)
	}

	// GET with the parameters in the query, as a presigned request does.
	g, err := http.Get(base + "/?" + url.Values{"Action": {"GetCallerIdentity"}, "Version": {"2011-06-15"}, "X-Amz-Algorithm": {"AWS4-HMAC-SHA256"}}.Encode())
	if err != nil {
		t.Fatal(err)
	}
	gb, _ := io.ReadAll(g.Body)
	g.Body.Close()
	if g.StatusCode != 200 || !strings.Contains(string(gb), "<Account>"+defaultAccount+"</Account>") {
		t.Errorf("GET GetCallerIdentity: %d %s", g.StatusCode, gb)
	}

	for _, c := range []struct {
		name, body string
		status     int
		code, msg  string
	}{
		{"no action", "Version=2011-06-15", 400, "MissingAction", "Missing Action"},
		{"another action", "Action=AssumeRole&Version=2011-06-15", 400, "InvalidAction", "AssumeRole"},
		{"no version", "Action=GetCallerIdentity", 400, "MissingParameter", "Version"},
		{"another version", "Action=GetCallerIdentity&Version=2010-01-01", 400, "InvalidAction", "2010-01-01"},
		{"a parameter it does not take", "Action=GetCallerIdentity&Version=2011-06-15&RoleArn=x", 400, "InvalidParameter", "RoleArn"},
		{"bad encoding", "Action=%zz", 400, "MalformedQueryString", ""},
		{"too large", "Action=GetCallerIdentity&Version=2011-06-15&Pad=" + strings.Repeat("x", stsapi.DefaultMaxBodyBytes), 413, "RequestEntityTooLarge", "65536"},
	} {
		res, body := post(c.body, "application/x-www-form-urlencoded")
		var e struct {
			XMLName   xml.Name `xml:"ErrorResponse"`
			Xmlns     string   `xml:"xmlns,attr"`
			Type      string   `xml:"Error>Type"`
			Code      string   `xml:"Error>Code"`
			Message   string   `xml:"Error>Message"`
			RequestID string   `xml:"RequestId"`
		}
		if err := xml.Unmarshal([]byte(body), &e); err != nil || res.StatusCode != c.status || e.Code != c.code || e.Type != "Sender" ||
			!strings.Contains(e.Message, c.msg) || e.RequestID != res.Header.Get("x-amzn-RequestId") || !requestID.MatchString(e.RequestID) ||
			e.Xmlns != "https://sts.amazonaws.com/doc/2011-06-15/" {
			t.Errorf("%s: %d %v\n%s\nwant %d %s", c.name, res.StatusCode, err, body, c.status, c.code)
		}
	}

	// POST / that is neither form-encoded nor Cloud Map's stays unknown.
	if res, body := post(`{}`, "application/json"); res.StatusCode != 404 || !strings.Contains(body, "no operation at POST /") {
		t.Errorf("POST / with JSON: %d %s", res.StatusCode, body)
	}
}
