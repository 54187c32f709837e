package route

import (
	"fmt"
	"net/http"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// TestLevelsAsEnvoy: header mutations give what Envoy's HeaderParser
// (evaluateHeaders) gives: within a level the removals first, then each
// add decided on the headers as the removals left them, the overwrites
// made before the appends; a less specific level sees what the more
// specific ones did. Requests and responses alike.
func TestLevelsAsEnvoy(t *testing.T) {
	add := func(v string, m AppendMode) HeaderAdd { return HeaderAdd{Key: "X", Value: v, Mode: m} }
	cases := []struct {
		name  string
		had   []string // X's values before; nil: none
		route HeaderOps
		vhost HeaderOps
		want  string
	}{
		{"append then overwrite", nil, HeaderOps{RequestAdd: []HeaderAdd{add("a", AppendOrAdd), add("b", OverwriteOrAdd)}}, HeaderOps{}, `["b" "a"]`},
		{"two adds if absent", nil, HeaderOps{RequestAdd: []HeaderAdd{add("1", AddIfAbsent), add("2", AddIfAbsent)}}, HeaderOps{}, `["1" "2"]`},
		{"overwrite if exists after an append", nil, HeaderOps{RequestAdd: []HeaderAdd{add("1", AppendOrAdd), add("2", OverwriteIfExists)}}, HeaderOps{}, `["1"]`},
		{"overwrite if exists after an overwrite", nil, HeaderOps{RequestAdd: []HeaderAdd{add("a", OverwriteOrAdd), add("b", OverwriteIfExists)}}, HeaderOps{}, `["a"]`},
		{"overwrite if exists, had", []string{"c"}, HeaderOps{RequestAdd: []HeaderAdd{add("a", AppendOrAdd), add("b", OverwriteIfExists)}}, HeaderOps{}, `["b" "a"]`},
		{"add if absent after a removal", []string{"c"}, HeaderOps{RequestRemove: []string{"X"}, RequestAdd: []HeaderAdd{add("n", AddIfAbsent)}}, HeaderOps{}, `["n"]`},
		{"a later level sees the route's", nil, HeaderOps{RequestAdd: []HeaderAdd{add("r", AppendOrAdd)}}, HeaderOps{RequestAdd: []HeaderAdd{add("v", AddIfAbsent)}}, `["r"]`},
		{"a later level wins", []string{"c"}, HeaderOps{RequestAdd: []HeaderAdd{add("r", OverwriteOrAdd)}}, HeaderOps{RequestRemove: []string{"X"}}, `[]`},
		{"empty value dropped", []string{"c"}, HeaderOps{RequestAdd: []HeaderAdd{add("", OverwriteOrAdd)}}, HeaderOps{}, `["c"]`},
		{"empty value kept", []string{"c"}, HeaderOps{RequestAdd: []HeaderAdd{{Key: "X", Mode: OverwriteOrAdd, KeepEmpty: true}}}, HeaderOps{}, `[""]`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, resp := range []bool{false, true} {
				h := http.Header{}
				if tc.had != nil {
					h["X"] = append([]string(nil), tc.had...)
				}
				l := Levels{nil, &tc.route, &tc.vhost, nil}
				if resp {
					r, v := tc.route, tc.vhost
					r.ResponseAdd, r.ResponseRemove, r.RequestAdd, r.RequestRemove = r.RequestAdd, r.RequestRemove, nil, nil
					v.ResponseAdd, v.ResponseRemove, v.RequestAdd, v.RequestRemove = v.RequestAdd, v.RequestRemove, nil, nil
					l = Levels{nil, &r, &v, nil}
					l.Response(h)
				} else {
					l.Request(h)
				}
				got := fmt.Sprintf("%q", h["X"])
				if got != tc.want {
					t.Errorf("response %v: X %s, want %s", resp, got, tc.want)
				}
			}
		})
	}
}

// TestRawValueIgnored: a mutation's raw_value is not its value, as
// Envoy's header mutations read value only (HeadersToAddEntry): an add
// with only a raw_value adds an empty value, dropped unless
// keep_empty_value.
func TestRawValueIgnored(t *testing.T) {
	rc := &routev3.RouteConfiguration{Name: "r", VirtualHosts: []*routev3.VirtualHost{{Name: "v", Domains: []string{"*"}, Routes: []*routev3.Route{to("c", "/")}}}}
	rc.RequestHeadersToAdd = []*corev3.HeaderValueOption{
		{Header: &corev3.HeaderValue{Key: "x-raw", RawValue: []byte("raw")}},
		{Header: &corev3.HeaderValue{Key: "x-kept", RawValue: []byte("raw")}, KeepEmptyValue: true}}
	c, err := Compile(rc)
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	l := Levels{nil, nil, nil, &c.Headers}
	l.Request(h)
	if got := fmt.Sprintf("%q", h); got != `map["X-Kept":[""]]` {
		t.Errorf("headers %s, want map[\"X-Kept\":[\"\"]]", got)
	}
}
