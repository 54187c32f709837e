package httpconn

import (
	"strings"
	"testing"

	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

type namedFilter struct{ name string }

func (namedFilter) DecodeHeaders(Exchange, *any) *LocalReply { return nil }
func (namedFilter) Done(Exchange, any)                       {}

func TestFilterChainOrderAndNACKs(t *testing.T) {
	router, _ := anypb.New(&routerv3.Router{})
	custom, _ := anypb.New(&structpb.Struct{})
	rf := &hcmv3.HttpFilter{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}}
	cf := func(name string, optional bool) *hcmv3.HttpFilter {
		return &hcmv3.HttpFilter{Name: name, IsOptional: optional, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: custom}}
	}
	deps := Deps{
		Filters: map[string]FilterFactory{custom.GetTypeUrl(): func(_ *anypb.Any, path string, _ HCMInfo) (Filter, error) {
			return namedFilter{path}, nil
		}},
		Prepend: func(h HCMInfo) ([]Filter, error) { return []Filter{namedFilter{"tracing:" + h.StatPrefix}}, nil },
	}
	info := HCMInfo{StatPrefix: "ingress"}
	got, err := buildFilters(&hcmv3.HttpConnectionManager{HttpFilters: []*hcmv3.HttpFilter{cf("a", false), cf("b", false), rf}}, "hcm", deps, info)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range got {
		names = append(names, f.(namedFilter).name)
	}
	if strings.Join(names, " ") != "tracing:ingress hcm.http_filters[0] hcm.http_filters[1]" {
		t.Errorf("order: %v", names)
	}
	// The router alone: no filter at all, so streams allocate nothing for them.
	got, err = buildFilters(&hcmv3.HttpConnectionManager{HttpFilters: []*hcmv3.HttpFilter{rf}}, "hcm", Deps{}, info)
	if err != nil || got != nil {
		t.Errorf("router only: %v, %v", got, err)
	}
	for _, tc := range []struct {
		fs   []*hcmv3.HttpFilter
		want string
	}{
		{[]*hcmv3.HttpFilter{rf, cf("a", false)}, "hcm.http_filters[0]: the router filter must be last"},
		{[]*hcmv3.HttpFilter{cf("a", false)}, "the last http filter must be the router"},
		{nil, "http_filters is empty"},
	} {
		if _, err := buildFilters(&hcmv3.HttpConnectionManager{HttpFilters: tc.fs}, "hcm", deps, info); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err %v, want %q", tc.fs, err, tc.want)
		}
	}
	// Unknown filters are NACKed unless optional.
	if _, err := buildFilters(&hcmv3.HttpConnectionManager{HttpFilters: []*hcmv3.HttpFilter{cf("a", false), rf}}, "hcm", Deps{}, info); err == nil ||
		!strings.Contains(err.Error(), "hcm.http_filters[0]: http filter type.googleapis.com/google.protobuf.Struct is not supported by weft proxy") {
		t.Errorf("unknown filter: %v", err)
	}
	if got, err := buildFilters(&hcmv3.HttpConnectionManager{HttpFilters: []*hcmv3.HttpFilter{cf("a", true), rf}}, "hcm", Deps{}, info); err != nil || len(got) != 0 {
		t.Errorf("optional unknown filter: %v, %v", got, err)
	}
}
