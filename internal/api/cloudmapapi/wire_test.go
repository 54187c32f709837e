package cloudmapapi_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/api"
	"github.com/weftmesh/weft/internal/api/cloudmapapi"
	"github.com/weftmesh/weft/internal/cloudmap"
	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/store/bolt"
)

var update = flag.Bool("update", false, "rewrite testdata/wire.golden")

// wireCase is one request: an operation and its body, in which {{name}}
// stands for the id the setup gave name.
type wireCase struct{ name, op, body string }

// TestErrorsOnTheWire sends the bad requests the other tests and the fuzz
// corpus send, and more that reach each of the registry's rules, to a
// registry whose ids and clock are fixed, and compares every answer
// (status, x-amzn-ErrorType and body) and the hash of every request id
// the setup stored with testdata/wire.golden: a change to where a request
// is validated must not change what a client sees, nor what a retry of a
// request made before it is compared with.
func TestErrorsOnTheWire(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "weft.db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Date(2026, 10, 1, 12, 0, 0, 0, time.UTC)
	reg := cloudmap.NewRegistry(st, cloudmap.Config{Region: region, AccountID: account,
		Now: func() time.Time { return now }, Rand: rand.NewChaCha8([32]byte{'w', 'i', 'r', 'e'})})
	h := &api.Handler{CloudMap: cloudmapapi.New(reg, slog.New(slog.NewTextHandler(io.Discard, nil)))}
	ids := map[string]string{}
	expand := func(s string) string {
		for k, v := range ids {
			s = strings.ReplaceAll(s, "{{"+k+"}}", v)
		}
		return s
	}
	send := func(op, body string) (int, string, string) {
		req := httptest.NewRequest("POST", "/", strings.NewReader(expand(body)))
		req.Header.Set("X-Amz-Target", cloudmapapi.TargetPrefix+op)
		req.Header.Set("Content-Type", "application/x-amz-json-1.1")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code, rec.Header().Get("x-amzn-ErrorType"), rec.Body.String()
	}
	// setup: each creates what later cases name; its answer must be 200.
	namespace := func(name, op, body string) {
		t.Helper()
		code, _, out := send(op, body)
		var r struct{ OperationId string }
		if code != http.StatusOK || json.Unmarshal([]byte(out), &r) != nil {
			t.Fatalf("setup %s: %d %s", op, code, out)
		}
		_, _, out = send("GetOperation", `{"OperationId":"`+r.OperationId+`"}`)
		var got struct {
			Operation struct{ Targets map[string]string }
		}
		json.Unmarshal([]byte(out), &got)
		ids[name] = got.Operation.Targets["NAMESPACE"]
	}
	service := func(name, body string) {
		t.Helper()
		code, _, out := send("CreateService", body)
		var r struct{ Service struct{ Id string } }
		if code != http.StatusOK || json.Unmarshal([]byte(out), &r) != nil {
			t.Fatalf("setup CreateService %s: %d %s", name, code, out)
		}
		ids[name] = r.Service.Id
	}
	ok := func(op, body string) {
		t.Helper()
		if code, _, out := send(op, body); code != http.StatusOK {
			t.Fatalf("setup %s %s: %d %s", op, body, code, out)
		}
	}
	namespace("priv", "CreatePrivateDnsNamespace", `{"Name":"priv.local","Vpc":"vpc-1","CreatorRequestId":"tok-priv","Description":"d","Properties":{"DnsProperties":{"SOA":{"TTL":60}}},"Tags":[{"Key":"a","Value":"1"}]}`)
	namespace("http", "CreateHttpNamespace", `{"Name":"http-ns","CreatorRequestId":"tok-http","Tags":[{"Key":"b","Value":"2"}]}`)
	namespace("pub", "CreatePublicDnsNamespace", `{"Name":"pub.example.com","CreatorRequestId":"tok-pub"}`)
	service("web", `{"Name":"web","NamespaceId":"{{priv}}","CreatorRequestId":"tok-web","Description":"w","DnsConfig":{"RoutingPolicy":"WEIGHTED","DnsRecords":[{"Type":"A","TTL":60},{"Type":"AAAA","TTL":60}]},"Tags":[{"Key":"t","Value":"v"}]}`)
	service("plain", `{"Name":"plain","NamespaceId":"{{priv}}","DnsConfig":{"DnsRecords":[{"Type":"A","TTL":60}]},"HealthCheckCustomConfig":{"FailureThreshold":2}}`)
	service("srv", `{"Name":"_srv._tcp","NamespaceId":"{{priv}}","DnsConfig":{"DnsRecords":[{"Type":"SRV","TTL":10}]}}`)
	service("cname", `{"Name":"cn","NamespaceId":"{{pub}}","DnsConfig":{"RoutingPolicy":"WEIGHTED","DnsRecords":[{"Type":"CNAME","TTL":10}]}}`)
	service("checked", `{"Name":"checked","NamespaceId":"{{pub}}","DnsConfig":{"DnsRecords":[{"Type":"A","TTL":10}]},"HealthCheckConfig":{"Type":"HTTP","ResourcePath":"/h","FailureThreshold":3}}`)
	service("h", `{"Name":"h","NamespaceId":"{{http}}","CreatorRequestId":"tok-h"}`)
	service("apionly", `{"Name":"apionly","NamespaceId":"{{priv}}","Type":"HTTP"}`)
	ok("RegisterInstance", `{"ServiceId":"{{plain}}","InstanceId":"i-1","CreatorRequestId":"tok-reg","Attributes":{"AWS_INSTANCE_IPV4":"10.0.0.1","AWS_INIT_HEALTH_STATUS":"UNHEALTHY","zone":"a"}}`)
	ok("RegisterInstance", `{"ServiceId":"{{h}}","InstanceId":"i-2","Attributes":{"AWS_INSTANCE_IPV4":"10.0.0.2"}}`)
	ok("UpdateHttpNamespace", `{"Id":"{{http}}","UpdaterRequestId":"tok-upd","Namespace":{"Description":"x"}}`)
	ok("UpdatePrivateDnsNamespace", `{"Id":"{{priv}}","UpdaterRequestId":"tok-updp","Namespace":{"Properties":{"DnsProperties":{"SOA":{"TTL":30}}}}}`)
	var attrs []string
	for i := range 29 {
		attrs = append(attrs, fmt.Sprintf(`"k%d":"v"`, i))
	}
	ok("UpdateServiceAttributes", `{"ServiceId":"{{web}}","Attributes":{`+strings.Join(attrs, ",")+`}}`)
	var tags []string
	for i := range 49 {
		tags = append(tags, fmt.Sprintf(`{"Key":"t%d","Value":""}`, i))
	}
	ok("TagResource", `{"ResourceARN":"arn:aws:servicediscovery:`+region+`:`+account+`:namespace/{{priv}}","Tags":[`+strings.Join(tags, ",")+`]}`)
	rev := st.Revision()

	cases := append(wireCases(), fuzzCorpus(t)...)
	for name := range cloudmap.Model().Operations {
		cases = append(cases, wireCase{"empty " + name, name, `{}`})
	}
	slices.SortStableFunc(cases, func(a, b wireCase) int { return strings.Compare(a.name, b.name) })
	var out bytes.Buffer
	bad := 0
	for _, c := range cases {
		code, typ, body := send(c.op, c.body)
		if code != http.StatusOK {
			bad++
		}
		fmt.Fprintf(&out, "# %s\n%s %s\n=> %d %s %s\n\n", c.name, c.op, c.body, code, typ, strings.TrimSpace(body))
	}
	if st.Revision() != rev {
		// A case that succeeds may write; the golden says which did.
		fmt.Fprintf(&out, "# the cases wrote\n")
	}
	out.WriteString(tokenHashes(t, st))
	t.Logf("%d requests, %d answered with an error", len(cases), bad)

	golden := filepath.Join("testdata", "wire.golden")
	if *update {
		if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to write it)", err)
	}
	if !bytes.Equal(out.Bytes(), want) {
		got := strings.Split(out.String(), "\n")
		exp := strings.Split(string(want), "\n")
		for i := range max(len(got), len(exp)) {
			g, e := "", ""
			if i < len(got) {
				g = got[i]
			}
			if i < len(exp) {
				e = exp[i]
			}
			if g != e {
				t.Errorf("line %d:\n got: %s\nwant: %s", i+1, g, e)
			}
		}
		t.Errorf("the answers differ from %s (-update rewrites it, if the change is intended)", golden)
	}
}

// tokenHashes lists the request ids stored and the hash each holds of
// its request.
func tokenHashes(t *testing.T, st store.Store) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("# request id hashes\n")
	_, err := st.View(context.Background(), func(tx store.Tx) error {
		kvs, err := tx.List(cloudmap.KeyPrefix+"token/", "", 0)
		if err != nil {
			return err
		}
		for _, kv := range kvs {
			var tok cloudmap.TokenRecord
			if err := json.Unmarshal(kv.Value, &tok); err != nil {
				return err
			}
			fmt.Fprintf(&b, "%s %s\n", kv.Key, tok.Hash)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// fuzzCorpus returns FuzzAPI's corpus as cases.
func fuzzCorpus(t *testing.T) []wireCase {
	t.Helper()
	dir := filepath.Join("testdata", "fuzz", "FuzzAPI")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var cases []wireCase
	for _, e := range entries {
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		var vals []string
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := sc.Text()
			for _, p := range []string{"string(", "[]byte("} {
				if rest, ok := strings.CutPrefix(line, p); ok {
					v, err := strconv.Unquote(strings.TrimSuffix(rest, ")"))
					if err != nil {
						t.Fatalf("%s: %v", e.Name(), err)
					}
					vals = append(vals, v)
				}
			}
		}
		f.Close()
		if len(vals) != 2 {
			t.Fatalf("%s: %d values, want an operation and a body", e.Name(), len(vals))
		}
		cases = append(cases, wireCase{"fuzz " + e.Name(), vals[0], vals[1]})
	}
	// FuzzAPI's own seeds besides {} for every operation.
	return append(cases,
		wireCase{"fuzz seed update in another case", "UpdateHttpNamespace", `{"Id":"ns-1","Namespace":{"Description":"d"},"namespace":null}`},
		wireCase{"fuzz seed private namespace", "CreatePrivateDnsNamespace", `{"Name":"f.local","Vpc":"vpc-1"}`},
		wireCase{"fuzz seed register unknown service", "RegisterInstance", `{"ServiceId":"srv-x","InstanceId":"i","Attributes":{"AWS_INSTANCE_IPV4":"10.0.0.1"}}`},
	)
}

// wireCases are the bad requests of TestRawRequests and the SDK tests,
// and one or more for each rule of the registry.
func wireCases() []wireCase {
	nsARN := "arn:aws:servicediscovery:" + region + ":" + account + ":namespace/"
	svcARN := "arn:aws:servicediscovery:" + region + ":" + account + ":service/"
	var fifty, fiftyOne []string
	for i := range 51 {
		tag := fmt.Sprintf(`{"Key":"n%d","Value":""}`, i)
		if i < 50 {
			fifty = append(fifty, tag)
		}
		fiftyOne = append(fiftyOne, tag)
	}
	var many []string
	for i := range 31 {
		many = append(many, fmt.Sprintf(`"c%d":"v"`, i))
	}
	big := strings.Repeat("x", 1000)
	return []wireCase{
		// TestRawRequests
		{"raw wrong type", "CreateHttpNamespace", `{"Name": 5}`},
		{"raw missing required", "CreatePrivateDnsNamespace", `{"Name": "a.local"}`},
		{"raw wrong nested type", "CreateService", `{"Name": "s", "NamespaceId": "ns-1", "DnsConfig": {"DnsRecords": [{"Type": "A", "TTL": "60"}]}}`},
		{"raw enum", "DiscoverInstances", `{"NamespaceName": "n", "ServiceName": "s", "HealthStatus": "SICK"}`},
		{"raw pattern", "RegisterInstance", `{"ServiceId": "srv-1", "InstanceId": "a b", "Attributes": {}}`},
		{"raw attributes of the wrong type", "RegisterInstance", `{"ServiceId": "srv-1", "InstanceId": "i", "Attributes": {"AWS_INSTANCE_IPV4": 10}}`},
		{"raw not JSON", "ListServices", `{"Filters": [`},
		{"raw not an object", "ListServices", `[]`},
		{"raw data after the object", "ListServices", `{} {}`},
		{"raw a bracket after the object", "CreateHttpNamespace", `{"Name": "t1"}]`},
		{"raw required member nulled in another case", "UpdateHttpNamespace", `{"Id": "ns-1", "Namespace": {"Description": "d"}, "namespace": null}`},
		{"raw member in another case", "CreateHttpNamespace", `{"Name": "ok", "name": ""}`},
		{"raw nested member in another case", "CreateService", `{"Name": "s", "NamespaceId": "ns-1", "DnsConfig": {"DnsRecords": [{"Type": "A", "TTL": 60, "ttl": -7}]}}`},
		{"raw unknown operation", "DropEverything", `{}`},
		{"raw empty body", "CreateHttpNamespace", ``},

		// namespaces (TestSDK's, then the registry's rules)
		{"ns filter BETWEEN", "ListNamespaces", `{"Filters":[{"Name":"NAME","Condition":"BETWEEN","Values":["a","b"]}]}`},
		{"ns filter IN on NAME", "ListNamespaces", `{"Filters":[{"Name":"NAME","Condition":"IN","Values":["a","b"]}]}`},
		{"ns filter two values", "ListNamespaces", `{"Filters":[{"Name":"TYPE","Values":["HTTP","DNS_PUBLIC"]}]}`},
		{"ns filter no values", "ListNamespaces", `{"Filters":[{"Name":"TYPE","Values":[]}]}`},
		{"ns filter owner IN", "ListNamespaces", `{"Filters":[{"Name":"RESOURCE_OWNER","Condition":"IN","Values":["SELF"]}]}`},
		{"ns bad next token", "ListNamespaces", `{"NextToken":"zzz"}`},
		{"ns MaxResults 101", "ListNamespaces", `{"MaxResults":101}`},
		{"ns MaxResults 0", "ListNamespaces", `{"MaxResults":0}`},
		{"ns update of another type", "UpdateHttpNamespace", `{"Id":"{{priv}}","Namespace":{"Description":"x"}}`},
		{"ns update public of a private", "UpdatePublicDnsNamespace", `{"Id":"{{priv}}","Namespace":{"Description":"x"}}`},
		{"ns update unknown", "UpdatePrivateDnsNamespace", `{"Id":"ns-0000000000000000","Namespace":{"Description":"x"}}`},
		{"ns update foreign ARN", "UpdatePrivateDnsNamespace", `{"Id":"arn:aws:servicediscovery:` + region + `:444455556666:namespace/{{priv}}","Namespace":{"Description":"x"}}`},
		{"ns update token reused", "UpdateHttpNamespace", `{"Id":"{{http}}","UpdaterRequestId":"tok-upd","Namespace":{"Description":"y"}}`},
		{"ns update token replayed", "UpdateHttpNamespace", `{"Id":"{{http}}","UpdaterRequestId":"tok-upd","Namespace":{"Description":"x"}}`},
		{"ns update SOA TTL negative", "UpdatePrivateDnsNamespace", `{"Id":"{{priv}}","Namespace":{"Properties":{"DnsProperties":{"SOA":{"TTL":-1}}}}}`},
		{"ns same name other case", "CreatePrivateDnsNamespace", `{"Name":"PRIV.local","Vpc":"vpc-1"}`},
		{"ns http same name", "CreateHttpNamespace", `{"Name":"http-ns"}`},
		{"ns private name with a space", "CreatePrivateDnsNamespace", `{"Name":"bad name.example","Vpc":"vpc-1"}`},
		{"ns private name with a bang", "CreatePrivateDnsNamespace", `{"Name":"bad!name.example","Vpc":"vpc-1"}`},
		{"ns private name empty label", "CreatePrivateDnsNamespace", `{"Name":"a..b","Vpc":"vpc-1"}`},
		{"ns private name long label", "CreatePrivateDnsNamespace", `{"Name":"` + strings.Repeat("a", 64) + `.local","Vpc":"vpc-1"}`},
		{"ns private name only a dot", "CreatePrivateDnsNamespace", `{"Name":".","Vpc":"vpc-1"}`},
		{"ns private name an ARN", "CreatePrivateDnsNamespace", `{"Name":"arn:x","Vpc":"vpc-1"}`},
		{"ns private name too long", "CreatePrivateDnsNamespace", `{"Name":"` + strings.Repeat("a.", 127) + `a","Vpc":"vpc-1"}`},
		{"ns private name trailing dot taken", "CreatePrivateDnsNamespace", `{"Name":"priv.local.","Vpc":"vpc-1"}`},
		{"ns public name with underscore", "CreatePublicDnsNamespace", `{"Name":"a_b.example.com"}`},
		{"ns public name with a space", "CreatePublicDnsNamespace", `{"Name":"a b.example.com"}`},
		{"ns public name trailing dot", "CreatePublicDnsNamespace", `{"Name":"example.com."}`},
		{"ns public name long label", "CreatePublicDnsNamespace", `{"Name":"` + strings.Repeat("a", 64) + `.com"}`},
		{"ns public name one label", "CreatePublicDnsNamespace", `{"Name":"com"}`},
		{"ns public name taken", "CreatePublicDnsNamespace", `{"Name":"PUB.example.com"}`},
		{"ns public bad name and 51 tags", "CreatePublicDnsNamespace", `{"Name":"a b","Tags":[` + strings.Join(fiftyOne, ",") + `]}`},
		{"ns 51 tags", "CreateHttpNamespace", `{"Name":"tagged","Tags":[` + strings.Join(fiftyOne, ",") + `]}`},
		{"ns 51 tags private", "CreatePrivateDnsNamespace", `{"Name":"tagged.local","Vpc":"vpc-1","Tags":[` + strings.Join(fiftyOne, ",") + `]}`},
		{"ns bad private name and 51 tags", "CreatePrivateDnsNamespace", `{"Name":"a b","Vpc":"vpc-1","Tags":[` + strings.Join(fiftyOne, ",") + `]}`},
		{"ns token reused", "CreatePrivateDnsNamespace", `{"Name":"priv.local","Vpc":"vpc-1","CreatorRequestId":"tok-priv"}`},
		{"ns token replayed", "CreatePrivateDnsNamespace", `{"Name":"priv.local","Vpc":"vpc-1","CreatorRequestId":"tok-priv","Description":"d","Properties":{"DnsProperties":{"SOA":{"TTL":60}}},"Tags":[{"Key":"a","Value":"1"}]}`},
		{"ns token replayed, members reordered", "CreatePrivateDnsNamespace", `{"Tags":[{"Value":"1","Key":"a"}],"Vpc":"vpc-1","Properties":{"DnsProperties":{"SOA":{"TTL":60}}},"Description":"d","CreatorRequestId":"tok-priv","Name":"priv.local","Unknown":1}`},
		{"ns http token replayed", "CreateHttpNamespace", `{"Name":"http-ns","CreatorRequestId":"tok-http","Tags":[{"Key":"b","Value":"2"}]}`},
		{"ns public token replayed", "CreatePublicDnsNamespace", `{"Name":"pub.example.com","CreatorRequestId":"tok-pub"}`},
		{"ns public token reused", "CreatePublicDnsNamespace", `{"Name":"pub2.example.com","CreatorRequestId":"tok-pub"}`},
		{"ns token too long", "CreateHttpNamespace", `{"Name":"x","CreatorRequestId":"` + strings.Repeat("t", 65) + `"}`},
		{"ns delete with services", "DeleteNamespace", `{"Id":"{{priv}}"}`},
		{"ns delete unknown", "DeleteNamespace", `{"Id":"ns-0000000000000000"}`},
		{"ns get foreign ARN", "GetNamespace", `{"Id":"arn:aws:servicediscovery:` + region + `:444455556666:namespace/{{priv}}"}`},
		{"ns get service ARN", "GetNamespace", `{"Id":"` + svcARN + `{{web}}"}`},
		{"ns get unknown", "GetNamespace", `{"Id":"ns-0000000000000000"}`},

		// services
		{"svc same name other case", "CreateService", `{"Name":"WEB","NamespaceId":"{{priv}}","DnsConfig":{"DnsRecords":[{"Type":"A","TTL":1}]}}`},
		{"svc unknown namespace", "CreateService", `{"Name":"x","NamespaceId":"ns-0000000000000000","DnsConfig":{"DnsRecords":[{"Type":"A","TTL":1}]}}`},
		{"svc no namespace", "CreateService", `{"Name":"x"}`},
		{"svc namespace in DnsConfig", "CreateService", `{"Name":"x","DnsConfig":{"NamespaceId":"ns-0000000000000000","DnsRecords":[{"Type":"A","TTL":1}]}}`},
		{"svc no namespace, 51 tags", "CreateService", `{"Name":"x","Tags":[` + strings.Join(fiftyOne, ",") + `]}`},
		{"svc 51 tags", "CreateService", `{"Name":"x","NamespaceId":"{{http}}","Tags":[` + strings.Join(fiftyOne, ",") + `]}`},
		{"svc 51 tags unknown namespace", "CreateService", `{"Name":"x","NamespaceId":"ns-0000000000000000","Tags":[` + strings.Join(fiftyOne, ",") + `]}`},
		{"svc 50 tags taken name", "CreateService", `{"Name":"h","NamespaceId":"{{http}}","Tags":[` + strings.Join(fifty, ",") + `]}`},
		{"svc DNS namespace without DnsConfig", "CreateService", `{"Name":"x","NamespaceId":"{{priv}}"}`},
		{"svc DnsConfig in an HTTP namespace", "CreateService", `{"Name":"x","NamespaceId":"{{http}}","DnsConfig":{"DnsRecords":[{"Type":"A","TTL":1}]}}`},
		{"svc Type HTTP with DnsConfig", "CreateService", `{"Name":"x","NamespaceId":"{{priv}}","Type":"HTTP","DnsConfig":{"DnsRecords":[{"Type":"A","TTL":1}]}}`},
		{"svc no records", "CreateService", `{"Name":"x","NamespaceId":"{{priv}}","DnsConfig":{"DnsRecords":[]}}`},
		{"svc A twice", "CreateService", `{"Name":"x","NamespaceId":"{{priv}}","DnsConfig":{"DnsRecords":[{"Type":"A","TTL":1},{"Type":"A","TTL":2}]}}`},
		{"svc A and SRV", "CreateService", `{"Name":"x","NamespaceId":"{{priv}}","DnsConfig":{"DnsRecords":[{"Type":"A","TTL":1},{"Type":"SRV","TTL":1}]}}`},
		{"svc CNAME MULTIVALUE", "CreateService", `{"Name":"x","NamespaceId":"{{priv}}","DnsConfig":{"RoutingPolicy":"MULTIVALUE","DnsRecords":[{"Type":"CNAME","TTL":1}]}}`},
		{"svc CNAME default policy", "CreateService", `{"Name":"x","NamespaceId":"{{priv}}","DnsConfig":{"DnsRecords":[{"Type":"CNAME","TTL":1}]}}`},
		{"svc bad policy", "CreateService", `{"Name":"x","NamespaceId":"{{priv}}","DnsConfig":{"RoutingPolicy":"FAILOVER","DnsRecords":[{"Type":"A","TTL":1}]}}`},
		{"svc health check in a private namespace", "CreateService", `{"Name":"x","NamespaceId":"{{priv}}","DnsConfig":{"DnsRecords":[{"Type":"A","TTL":1}]},"HealthCheckConfig":{"Type":"HTTP"}}`},
		{"svc both health checks", "CreateService", `{"Name":"x","NamespaceId":"{{http}}","HealthCheckConfig":{"Type":"TCP"},"HealthCheckCustomConfig":{}}`},
		{"svc TCP check with a path", "CreateService", `{"Name":"x","NamespaceId":"{{http}}","HealthCheckConfig":{"Type":"TCP","ResourcePath":"/"}}`},
		{"svc check with CNAME", "CreateService", `{"Name":"x","NamespaceId":"{{pub}}","DnsConfig":{"RoutingPolicy":"WEIGHTED","DnsRecords":[{"Type":"CNAME","TTL":1}]},"HealthCheckConfig":{"Type":"HTTP"}}`},
		{"svc FailureThreshold 11", "CreateService", `{"Name":"x","NamespaceId":"{{http}}","HealthCheckCustomConfig":{"FailureThreshold":11}}`},
		{"svc bad name", "CreateService", `{"Name":"a b","NamespaceId":"{{http}}"}`},
		{"svc bad type", "CreateService", `{"Name":"x","NamespaceId":"{{http}}","Type":"DNS"}`},
		{"svc token reused", "CreateService", `{"Name":"other","NamespaceId":"{{priv}}","CreatorRequestId":"tok-web","DnsConfig":{"DnsRecords":[{"Type":"A","TTL":1}]}}`},
		{"svc token replayed", "CreateService", `{"Name":"web","NamespaceId":"{{priv}}","CreatorRequestId":"tok-web","Description":"w","DnsConfig":{"RoutingPolicy":"WEIGHTED","DnsRecords":[{"Type":"A","TTL":60},{"Type":"AAAA","TTL":60}]},"Tags":[{"Key":"t","Value":"v"}]}`},
		{"svc token replayed, namespace by ARN", "CreateService", `{"Name":"h","NamespaceId":"` + nsARN + `{{http}}","CreatorRequestId":"tok-h"}`},
		{"svc h token replayed", "CreateService", `{"Name":"h","NamespaceId":"{{http}}","CreatorRequestId":"tok-h"}`},
		{"svc update change record types", "UpdateService", `{"Id":"{{web}}","Service":{"DnsConfig":{"DnsRecords":[{"Type":"SRV","TTL":5}]}}}`},
		{"svc update one record of two", "UpdateService", `{"Id":"{{web}}","Service":{"DnsConfig":{"DnsRecords":[{"Type":"A","TTL":5}]}}}`},
		{"svc update records of a service without", "UpdateService", `{"Id":"{{apionly}}","Service":{"DnsConfig":{"DnsRecords":[{"Type":"A","TTL":5}]}}}`},
		{"svc update HTTP namespace", "UpdateService", `{"Id":"{{h}}","Service":{"Description":"x"}}`},
		{"svc update custom plus check", "UpdateService", `{"Id":"{{plain}}","Service":{"HealthCheckConfig":{"Type":"HTTP"}}}`},
		{"svc update check in private", "UpdateService", `{"Id":"{{web}}","Service":{"HealthCheckConfig":{"Type":"HTTP"}}}`},
		{"svc update TCP path", "UpdateService", `{"Id":"{{checked}}","Service":{"HealthCheckConfig":{"Type":"TCP","ResourcePath":"/x"}}}`},
		{"svc update CNAME check", "UpdateService", `{"Id":"{{cname}}","Service":{"HealthCheckConfig":{"Type":"HTTP"}}}`},
		{"svc update unknown", "UpdateService", `{"Id":"srv-0000000000000000","Service":{"Description":"x"}}`},
		{"svc update no change", "UpdateService", `{"Id":"{{web}}"}`},
		{"svc delete with instances", "DeleteService", `{"Id":"{{plain}}"}`},
		{"svc delete unknown", "DeleteService", `{"Id":"srv-0000000000000000"}`},
		{"svc get unknown", "GetService", `{"Id":"srv-0000000000000000"}`},
		{"svc get namespace ARN", "GetService", `{"Id":"` + nsARN + `{{priv}}"}`},
		{"svc list filter BEGINS_WITH", "ListServices", `{"Filters":[{"Name":"NAMESPACE_ID","Condition":"BEGINS_WITH","Values":["ns-"]}]}`},
		{"svc list filter two values", "ListServices", `{"Filters":[{"Name":"NAMESPACE_ID","Values":["a","b"]}]}`},
		{"svc list bad token", "ListServices", `{"NextToken":"x"}`},
		{"svc attributes 31", "UpdateServiceAttributes", `{"ServiceId":"{{plain}}","Attributes":{` + strings.Join(many, ",") + `}}`},
		{"svc attributes past 30 merged", "UpdateServiceAttributes", `{"ServiceId":"{{web}}","Attributes":{"new1":"v","new2":"v"}}`},
		{"svc attributes empty", "UpdateServiceAttributes", `{"ServiceId":"{{web}}","Attributes":{}}`},
		{"svc attributes unknown", "UpdateServiceAttributes", `{"ServiceId":"srv-0000000000000000","Attributes":{"a":"b"}}`},
		{"svc attributes delete none", "DeleteServiceAttributes", `{"ServiceId":"{{web}}","Attributes":[]}`},
		{"svc attributes delete unknown", "DeleteServiceAttributes", `{"ServiceId":"srv-0000000000000000","Attributes":["a"]}`},
		{"svc attributes get unknown", "GetServiceAttributes", `{"ServiceId":"srv-0000000000000000"}`},

		// instances
		{"inst A record without IPv4", "RegisterInstance", `{"ServiceId":"{{web}}","InstanceId":"bad","Attributes":{"AWS_INSTANCE_PORT":"80"}}`},
		{"inst AAAA record without IPv6", "RegisterInstance", `{"ServiceId":"{{web}}","InstanceId":"bad","Attributes":{"AWS_INSTANCE_IPV4":"10.0.0.1"}}`},
		{"inst not an IPv4 address", "RegisterInstance", `{"ServiceId":"{{plain}}","InstanceId":"bad","Attributes":{"AWS_INSTANCE_IPV4":"10.0.0.256"}}`},
		{"inst IPv6 in IPv4", "RegisterInstance", `{"ServiceId":"{{plain}}","InstanceId":"bad","Attributes":{"AWS_INSTANCE_IPV4":"fd00::1"}}`},
		{"inst IPv4 in IPv6", "RegisterInstance", `{"ServiceId":"{{web}}","InstanceId":"bad","Attributes":{"AWS_INSTANCE_IPV4":"10.0.0.1","AWS_INSTANCE_IPV6":"::ffff:10.0.0.1"}}`},
		{"inst port out of range", "RegisterInstance", `{"ServiceId":"{{plain}}","InstanceId":"bad","Attributes":{"AWS_INSTANCE_IPV4":"10.0.0.1","AWS_INSTANCE_PORT":"65536"}}`},
		{"inst bad initial health", "RegisterInstance", `{"ServiceId":"{{plain}}","InstanceId":"bad","Attributes":{"AWS_INSTANCE_IPV4":"10.0.0.1","AWS_INIT_HEALTH_STATUS":"SICK"}}`},
		{"inst EC2 id outside HTTP", "RegisterInstance", `{"ServiceId":"{{plain}}","InstanceId":"bad","Attributes":{"AWS_EC2_INSTANCE_ID":"i-0123"}}`},
		{"inst EC2 id with others", "RegisterInstance", `{"ServiceId":"{{h}}","InstanceId":"bad","Attributes":{"AWS_EC2_INSTANCE_ID":"i-0123","AWS_INSTANCE_IPV4":"10.0.0.1"}}`},
		{"inst alias without A", "RegisterInstance", `{"ServiceId":"{{srv}}","InstanceId":"bad","Attributes":{"AWS_ALIAS_DNS_NAME":"x.example.com"}}`},
		{"inst alias MULTIVALUE", "RegisterInstance", `{"ServiceId":"{{plain}}","InstanceId":"bad","Attributes":{"AWS_ALIAS_DNS_NAME":"x.example.com"}}`},
		{"inst alias with instance attribute", "RegisterInstance", `{"ServiceId":"{{web}}","InstanceId":"bad","Attributes":{"AWS_ALIAS_DNS_NAME":"x.example.com","AWS_INSTANCE_IPV4":"10.0.0.1"}}`},
		{"inst SRV without address", "RegisterInstance", `{"ServiceId":"{{srv}}","InstanceId":"bad","Attributes":{"AWS_INSTANCE_PORT":"80"}}`},
		{"inst SRV without port", "RegisterInstance", `{"ServiceId":"{{srv}}","InstanceId":"bad","Attributes":{"AWS_INSTANCE_IPV4":"10.0.0.1"}}`},
		{"inst CNAME without name", "RegisterInstance", `{"ServiceId":"{{cname}}","InstanceId":"bad","Attributes":{"k":"v"}}`},
		{"inst CNAME bad name", "RegisterInstance", `{"ServiceId":"{{cname}}","InstanceId":"bad","Attributes":{"AWS_INSTANCE_CNAME":"a b"}}`},
		{"inst check without port", "RegisterInstance", `{"ServiceId":"{{checked}}","InstanceId":"bad","Attributes":{"AWS_INSTANCE_IPV4":"10.0.0.1"}}`},
		{"inst 31 custom attributes", "RegisterInstance", `{"ServiceId":"{{h}}","InstanceId":"bad","Attributes":{` + strings.Join(many, ",") + `}}`},
		{"inst attributes too long", "RegisterInstance", `{"ServiceId":"{{h}}","InstanceId":"bad","Attributes":{"a":"` + big + `","b":"` + big + `","c":"` + big + `","d":"` + big + `","e":"` + big + `"}}`},
		{"inst value too long", "RegisterInstance", `{"ServiceId":"{{h}}","InstanceId":"bad","Attributes":{"a":"` + big + big + `"}}`},
		{"inst bad key", "RegisterInstance", `{"ServiceId":"{{h}}","InstanceId":"bad","Attributes":{"a b":"v"}}`},
		{"inst id too long", "RegisterInstance", `{"ServiceId":"{{h}}","InstanceId":"` + strings.Repeat("i", 65) + `","Attributes":{}}`},
		{"inst unknown service", "RegisterInstance", `{"ServiceId":"srv-0000000000000000","InstanceId":"i","Attributes":{}}`},
		{"inst unknown service bad attributes", "RegisterInstance", `{"ServiceId":"srv-0000000000000000","InstanceId":"i","Attributes":{"AWS_INSTANCE_IPV4":"x"}}`},
		{"inst missing IPv4", "RegisterInstance", `{"ServiceId":"{{plain}}","InstanceId":"j","Attributes":{"x":"y"}}`},
		{"inst invalid instance id", "RegisterInstance", `{"ServiceId":"{{plain}}","InstanceId":"bad id!","Attributes":{"AWS_INSTANCE_IPV4":"10.3.0.2"}}`},
		{"inst token reused", "RegisterInstance", `{"ServiceId":"{{plain}}","InstanceId":"i-9","CreatorRequestId":"tok-reg","Attributes":{"AWS_INSTANCE_IPV4":"10.0.0.1"}}`},
		{"inst token replayed", "RegisterInstance", `{"ServiceId":"{{plain}}","InstanceId":"i-1","CreatorRequestId":"tok-reg","Attributes":{"zone":"a","AWS_INSTANCE_IPV4":"10.0.0.1","AWS_INIT_HEALTH_STATUS":"UNHEALTHY"}}`},
		{"inst token replayed, service by ARN", "RegisterInstance", `{"ServiceId":"` + svcARN + `{{plain}}","InstanceId":"i-1","CreatorRequestId":"tok-reg","Attributes":{"zone":"a","AWS_INSTANCE_IPV4":"10.0.0.1","AWS_INIT_HEALTH_STATUS":"UNHEALTHY"}}`},
		{"inst deregister unknown", "DeregisterInstance", `{"ServiceId":"{{plain}}","InstanceId":"nope"}`},
		{"inst deregister unknown service", "DeregisterInstance", `{"ServiceId":"srv-0000000000000000","InstanceId":"i-1"}`},
		{"inst get unknown", "GetInstance", `{"ServiceId":"{{plain}}","InstanceId":"nope"}`},
		{"inst list unknown service", "ListInstances", `{"ServiceId":"srv-0000000000000000"}`},
		{"inst list bad token", "ListInstances", `{"ServiceId":"{{plain}}","NextToken":"x"}`},
		{"inst discover unknown service", "DiscoverInstances", `{"NamespaceName":"priv.local","ServiceName":"nope"}`},
		{"inst discover unknown namespace", "DiscoverInstances", `{"NamespaceName":"nope.local","ServiceName":"web"}`},
		{"inst discover other owner", "DiscoverInstances", `{"NamespaceName":"priv.local","ServiceName":"web","OwnerAccount":"444455556666"}`},
		{"inst discover MaxResults 0", "DiscoverInstances", `{"NamespaceName":"priv.local","ServiceName":"web","MaxResults":0}`},
		{"inst revision unknown", "DiscoverInstancesRevision", `{"NamespaceName":"priv.local","ServiceName":"nope"}`},

		// health
		{"health no custom check", "UpdateInstanceCustomHealthStatus", `{"ServiceId":"{{h}}","InstanceId":"i-2","Status":"UNHEALTHY"}`},
		{"health unknown instance", "UpdateInstanceCustomHealthStatus", `{"ServiceId":"{{plain}}","InstanceId":"nope","Status":"HEALTHY"}`},
		{"health bad status", "UpdateInstanceCustomHealthStatus", `{"ServiceId":"{{plain}}","InstanceId":"i-1","Status":"UNKNOWN"}`},
		{"health unknown service", "UpdateInstanceCustomHealthStatus", `{"ServiceId":"srv-0000000000000000","InstanceId":"i-1","Status":"HEALTHY"}`},
		{"health status of unknown", "GetInstancesHealthStatus", `{"ServiceId":"{{plain}}","Instances":["nope"]}`},
		{"health status empty list", "GetInstancesHealthStatus", `{"ServiceId":"{{plain}}","Instances":[]}`},

		// operations
		{"op UPDATE_DATE EQ", "ListOperations", `{"Filters":[{"Name":"UPDATE_DATE","Condition":"EQ","Values":["1"]}]}`},
		{"op UPDATE_DATE not a date", "ListOperations", `{"Filters":[{"Name":"UPDATE_DATE","Condition":"BETWEEN","Values":["a","b"]}]}`},
		{"op STATUS BEGINS_WITH", "ListOperations", `{"Filters":[{"Name":"STATUS","Condition":"BEGINS_WITH","Values":["S"]}]}`},
		{"op unknown filter name", "ListOperations", `{"Filters":[{"Name":"COLOR","Values":["red"]}]}`},
		{"op unknown", "GetOperation", `{"OperationId":"nope"}`},
		{"op other owner", "GetOperation", `{"OperationId":"nope","OwnerAccount":"444455556666"}`},

		// tags
		{"tags past 50", "TagResource", `{"ResourceARN":"` + nsARN + `{{priv}}","Tags":[{"Key":"x1","Value":""},{"Key":"x2","Value":""}]}`},
		{"tags 50 new", "TagResource", `{"ResourceARN":"` + svcARN + `{{web}}","Tags":[` + strings.Join(fifty, ",") + `]}`},
		{"tags unknown resource", "ListTagsForResource", `{"ResourceARN":"` + nsARN + `ns-0000000000000000"}`},
		{"tags not an ARN", "TagResource", `{"ResourceARN":"{{priv}}","Tags":[]}`},
		{"tags untag unknown", "UntagResource", `{"ResourceARN":"` + svcARN + `srv-0000000000000000","TagKeys":[]}`},
		{"tags empty key", "TagResource", `{"ResourceARN":"` + nsARN + `{{priv}}","Tags":[{"Key":"","Value":""}]}`},
	}
}
