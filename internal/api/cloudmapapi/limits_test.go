package cloudmapapi_test

import (
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	sdk "github.com/aws/aws-sdk-go-v2/service/servicediscovery"
	"github.com/aws/smithy-go"
)

// TestSDKBodyTooLarge: aws-sdk-go-v2 sees an oversized request as the
// error RequestEntityTooLargeException with HTTP status 413, and nothing
// is written.
func TestSDKBodyTooLarge(t *testing.T) {
	ts := newServer(t, filepath.Join(t.TempDir(), "weft.db"))
	rev := ts.st.Revision()
	desc := strings.Repeat("d", 2<<20)
	_, err := ts.client(nil).CreateHttpNamespace(ctx, &sdk.CreateHttpNamespaceInput{Name: &[]string{"big"}[0], Description: &desc})
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorCode() != "RequestEntityTooLargeException" || !strings.Contains(ae.ErrorMessage(), "1048576") {
		t.Fatalf("error %v, want RequestEntityTooLargeException", err)
	}
	var re *awshttp.ResponseError
	if !errors.As(err, &re) || re.HTTPStatusCode() != http.StatusRequestEntityTooLarge {
		t.Errorf("HTTP status of %v, want 413", err)
	}
	if got := ts.st.Revision(); got != rev {
		t.Errorf("an oversized request wrote: revision %d -> %d", rev, got)
	}
}
