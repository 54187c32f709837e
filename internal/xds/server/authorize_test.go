package server

import (
	"context"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/weftmesh/weft/internal/xds/translate"
)

// TestAuthorizeHook: Options.Authorize sees the parsed identity and the
// stream's metadata once per stream, before anything is computed or sent;
// its error closes the stream; a malformed node id never reaches it.
func TestAuthorizeHook(t *testing.T) {
	var mu sync.Mutex
	var seen []translate.Identity
	var tokens []string
	translated := map[string]int{}
	st := colorStore(t)
	srv := startServer(t, st, func(v *translate.View, id translate.Identity, m *translate.Memo) (*translate.Resources, error) {
		mu.Lock()
		translated[id.Name]++
		mu.Unlock()
		return fakeTranslate(v, id, m)
	}, func(o *Options) {
		o.Authorize = func(ctx context.Context, id translate.Identity) (bool, error) {
			md, _ := metadata.FromIncomingContext(ctx)
			mu.Lock()
			defer mu.Unlock()
			seen = append(seen, id)
			tokens = append(tokens, md.Get("authorization")...)
			if id.Name == "blue" {
				return false, grpcstatus.Error(codes.PermissionDenied, "not yours")
			}
			return true, nil
		}
	})
	withToken := func(tok string) grpc.DialOption {
		return grpc.WithStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			return streamer(metadata.AppendToOutgoingContext(ctx, "authorization", tok), desc, cc, method, opts...)
		})
	}
	plain := grpc.WithTransportCredentials(insecure.NewCredentials())

	red := dialADS(t, srv.addr, envoyNode("mesh/m/virtualNode/red"), plain, withToken("Bearer red"))
	envoyStart(t, red)

	blue := dialADS(t, srv.addr, envoyNode("mesh/m/virtualNode/blue"), plain, withToken("Bearer red"))
	blue.request(cdsType, "", "", nil, "")
	if err := blue.ended(); grpcstatus.Code(err) != codes.PermissionDenied {
		t.Fatalf("refused stream ended with %v", err)
	}

	bad := dialADS(t, srv.addr, envoyNode("not-an-arn"), plain)
	bad.request(cdsType, "", "", nil, "")
	if err := bad.ended(); grpcstatus.Code(err) != codes.InvalidArgument {
		t.Fatalf("malformed id: %v", err)
	}

	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 || seen[0].Name != "red" || seen[0].Mesh != "m" || seen[0].MeshOwner != "111122223333" || seen[1].Name != "blue" {
		t.Fatalf("Authorize saw %+v", seen)
	}
	if len(tokens) != 2 || tokens[0] != "Bearer red" {
		t.Fatalf("Authorize saw metadata %v", tokens)
	}
	if translated["blue"] != 0 {
		t.Fatalf("blue was translated %d times for a refused stream", translated["blue"])
	}
}
