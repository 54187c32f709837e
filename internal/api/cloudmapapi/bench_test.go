package cloudmapapi_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	sdk "github.com/aws/aws-sdk-go-v2/service/servicediscovery"

	"github.com/weftmesh/weft/internal/api/cloudmapapi"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkRegisterThenDiscover measures RegisterInstance -> DiscoverInstances
// visibility through the SDK over HTTP: each iteration re-registers one
// instance at a new address (fsync'd before the 200) and calls
// DiscoverInstances, which must return that address. ns/op is the two
// round trips together.
func BenchmarkRegisterThenDiscover(b *testing.B) {
	ts := newServer(b, filepath.Join(b.TempDir(), "weft.db"))
	c := ts.client(nil, disableHostPrefix)
	nsID := benchNamespace(b, c, "bench.local")
	svc, err := c.CreateService(ctx, &sdk.CreateServiceInput{Name: aws.String("web"), NamespaceId: aws.String(nsID), Type: "HTTP"})
	if err != nil {
		b.Fatal(err)
	}
	var register, discover time.Duration
	cpu0 := cpuTime()
	b.ResetTimer()
	for i := range b.N {
		ip := fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)
		t0 := time.Now()
		if _, err := c.RegisterInstance(ctx, &sdk.RegisterInstanceInput{ServiceId: svc.Service.Id, InstanceId: aws.String("i"), Attributes: map[string]string{"AWS_INSTANCE_IPV4": ip}}); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		out, err := c.DiscoverInstances(ctx, &sdk.DiscoverInstancesInput{NamespaceName: aws.String("bench.local"), ServiceName: aws.String("web")})
		if err != nil || len(out.Instances) != 1 || out.Instances[0].Attributes["AWS_INSTANCE_IPV4"] != ip {
			b.Fatalf("DiscoverInstances after registering %s: %v %+v", ip, err, out)
		}
		register += t1.Sub(t0)
		discover += time.Since(t1)
	}
	b.StopTimer()
	b.ReportMetric(float64(register.Microseconds())/float64(b.N), "register-µs")
	b.ReportMetric(float64(discover.Microseconds())/float64(b.N), "discover-µs")
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
}

func benchNamespace(b *testing.B, c *sdk.Client, name string) string {
	b.Helper()
	out, err := c.CreateHttpNamespace(ctx, &sdk.CreateHttpNamespaceInput{Name: aws.String(name)})
	if err != nil {
		b.Fatal(err)
	}
	op, err := c.GetOperation(ctx, &sdk.GetOperationInput{OperationId: out.OperationId})
	if err != nil {
		b.Fatal(err)
	}
	return op.Operation.Targets["NAMESPACE"]
}

// BenchmarkRegisterInstance measures the server's side of one
// RegisterInstance: the handler called without a socket on bbolt without
// fsync, so that cpu-µs/op is the API's and the registry's work (decode,
// validation, the transaction) and little else. Each iteration registers
// the same instance at a new address.
func BenchmarkRegisterInstance(b *testing.B) {
	h, _ := newHandler(b)
	call := func(op, body string) string {
		req := httptest.NewRequest("POST", "/", strings.NewReader(body))
		req.Header.Set("X-Amz-Target", cloudmapapi.TargetPrefix+op)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("%s: %d %s", op, rec.Code, rec.Body)
		}
		return rec.Body.String()
	}
	call("CreateHttpNamespace", `{"Name":"bench"}`)
	var ns struct{ Namespaces []struct{ Id string } }
	json.Unmarshal([]byte(call("ListNamespaces", `{}`)), &ns)
	var svc struct{ Service struct{ Id string } }
	json.Unmarshal([]byte(call("CreateService", `{"Name":"web","NamespaceId":"`+ns.Namespaces[0].Id+`"}`)), &svc)
	cpu0 := cpuTime()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		call("RegisterInstance", fmt.Sprintf(`{"ServiceId":%q,"InstanceId":"i-1","Attributes":{"AWS_INSTANCE_IPV4":"10.%d.%d.%d","AWS_INSTANCE_PORT":"8080","zone":"a"}}`,
			svc.Service.Id, i>>16&255, i>>8&255, i&255))
	}
	b.StopTimer()
	b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/1e3/float64(b.N), "cpu-µs/op")
}
