package appmesh

import (
	"strings"
	"testing"
)

func TestARN(t *testing.T) {
	cases := []struct {
		region string
		ref    Ref
		arn    string
	}{
		{"us-east-1", Ref{Owner: "111122223333", Mesh: "m", Kind: KindMesh, Name: "m"}, "arn:aws:appmesh:us-east-1:111122223333:mesh/m"},
		{"us-west-2", Ref{Owner: "111122223333", Mesh: "m", Kind: KindVirtualService, Name: "red.colors.local"}, "arn:aws:appmesh:us-west-2:111122223333:mesh/m/virtualService/red.colors.local"},
		{"cn-north-1", Ref{Owner: "111122223333", Mesh: "m", Kind: KindRoute, Parent: "r", Name: "x"}, "arn:aws-cn:appmesh:cn-north-1:111122223333:mesh/m/virtualRouter/r/route/x"},
		{"us-gov-west-1", Ref{Owner: "111122223333", Mesh: "m", Kind: KindGatewayRoute, Parent: "g", Name: "x"}, "arn:aws-us-gov:appmesh:us-gov-west-1:111122223333:mesh/m/virtualGateway/g/gatewayRoute/x"},
	}
	for _, c := range cases {
		if got := ARN(c.region, c.ref); got != c.arn {
			t.Errorf("ARN = %s, want %s", got, c.arn)
		}
		region, ref, err := ParseARN(c.arn)
		if err != nil || region != c.region || ref != c.ref {
			t.Errorf("ParseARN(%s) = %s %+v %v", c.arn, region, ref, err)
		}
	}
	for _, bad := range []string{"", "arn:aws:s3:::b", "arn:aws:appmesh:us-east-1:1:mesh", "arn:aws:appmesh:us-east-1:1:mesh/m/virtualNode",
		"arn:aws:appmesh:us-east-1:1:mesh/m/route/x", "arn:aws-cn:appmesh:us-east-1:1:mesh/m", "arn:aws:appmesh:us-east-1:1:mesh/m//x",
		"arn:aws:appmesh:us-east-1:1:mesh/m/virtualRouter/r/gatewayRoute/x"} {
		if _, _, err := ParseARN(bad); err == nil {
			t.Errorf("ParseARN(%q) accepted", bad)
		}
	}
}

func TestParseLimits(t *testing.T) {
	l, err := ParseLimits("virtualNodesPerMesh=1000, meshes=2", DefaultLimits())
	if err != nil || l.VirtualNodesPerMesh != 1000 || l.Meshes != 2 || l.VirtualGatewaysPerMesh != 3 {
		t.Fatalf("%+v %v", l, err)
	}
	if back, err := ParseLimits(l.String(), Limits{}); err != nil || back != l {
		t.Fatalf("String does not parse back: %s -> %+v %v", l, back, err)
	}
	for _, bad := range []string{"bogus=1", "meshes", "meshes=x"} {
		if _, err := ParseLimits(bad, DefaultLimits()); err == nil {
			t.Errorf("ParseLimits(%q) accepted", bad)
		}
	}
}

func port(p int64) *int64 { return &p }

func TestCheckRoute(t *testing.T) {
	http80 := VirtualRouterListener{PortMapping: &PortMapping{Port: port(80), Protocol: PortProtocolHttp}}
	grpc90 := VirtualRouterListener{PortMapping: &PortMapping{Port: port(90), Protocol: PortProtocolGrpc}}
	one := &VirtualRouterSpec{Listeners: []VirtualRouterListener{http80}}
	two := &VirtualRouterSpec{Listeners: []VirtualRouterListener{http80, grpc90}}
	httpRoute := func(p *int64) *RouteSpec {
		return &RouteSpec{HttpRoute: &HttpRoute{Match: &HttpRouteMatch{Port: p}}}
	}
	cases := []struct {
		name   string
		spec   *RouteSpec
		router *VirtualRouterSpec
		want   string // "" for valid
	}{
		{"http on http", httpRoute(nil), one, ""},
		{"port given", httpRoute(port(80)), one, ""},
		{"no route type", &RouteSpec{}, one, "exactly one"},
		{"two route types", &RouteSpec{HttpRoute: &HttpRoute{}, TcpRoute: &TcpRoute{}}, one, "exactly one"},
		{"http2 on http", &RouteSpec{Http2Route: &HttpRoute{}}, one, "protocol"},
		{"two listeners need a port", httpRoute(nil), two, "must define a port match"},
		{"port picks the listener", &RouteSpec{GrpcRoute: &GrpcRoute{Match: &GrpcRouteMatch{Port: port(90)}}}, two, ""},
		{"port of another protocol", httpRoute(port(90)), two, "protocol"},
		{"port of no listener", httpRoute(port(81)), two, "does not match any listener"},
		{"tcp without match", &RouteSpec{TcpRoute: &TcpRoute{}}, &VirtualRouterSpec{Listeners: []VirtualRouterListener{{PortMapping: &PortMapping{Port: port(5432), Protocol: PortProtocolTcp}}}}, ""},
	}
	for _, c := range cases {
		err := CheckRoute(c.spec, c.router)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: error %v, want %q", c.name, err, c.want)
		}
		if e, ok := AsError(err); err != nil && (!ok || e.Code != CodeBadRequest) {
			t.Errorf("%s: %v is not a BadRequestException", c.name, err)
		}
	}
}

func TestCheckGatewayRoute(t *testing.T) {
	gw := &VirtualGatewaySpec{Listeners: []VirtualGatewayListener{
		{PortMapping: &VirtualGatewayPortMapping{Port: port(8080), Protocol: VirtualGatewayPortProtocolHttp}},
		{PortMapping: &VirtualGatewayPortMapping{Port: port(9090), Protocol: VirtualGatewayPortProtocolGrpc}},
	}}
	if err := CheckGatewayRoute(&GatewayRouteSpec{HttpRoute: &HttpGatewayRoute{Match: &HttpGatewayRouteMatch{Port: port(8080)}}}, gw); err != nil {
		t.Error(err)
	}
	if err := CheckGatewayRoute(&GatewayRouteSpec{HttpRoute: &HttpGatewayRoute{}}, gw); err == nil {
		t.Error("no port with two listeners accepted")
	}
	if err := CheckGatewayRoute(&GatewayRouteSpec{GrpcRoute: &GrpcGatewayRoute{Match: &GrpcGatewayRouteMatch{Port: port(8080)}}}, gw); err == nil {
		t.Error("grpc route on an http listener accepted")
	}
}

func TestReferences(t *testing.T) {
	n := func(s string) *string { return &s }
	route := &RouteSpec{TcpRoute: &TcpRoute{Action: &TcpRouteAction{WeightedTargets: []WeightedTarget{
		{VirtualNode: n("a")}, {VirtualNode: n("b")}, {VirtualNode: n("a")}}}}}
	if got := RouteTargets(route); strings.Join(got, ",") != "a,b" {
		t.Errorf("RouteTargets = %v", got)
	}
	gr := &GatewayRouteSpec{Http2Route: &HttpGatewayRoute{Action: &HttpGatewayRouteAction{Target: &GatewayRouteTarget{
		VirtualService: &GatewayRouteVirtualService{VirtualServiceName: n("s.local")}}}}}
	if got := GatewayRouteTargetService(gr); got != "s.local" {
		t.Errorf("GatewayRouteTargetService = %q", got)
	}
	vs := &VirtualServiceSpec{Provider: &VirtualServiceProvider{VirtualRouter: &VirtualRouterServiceProvider{VirtualRouterName: n("r")}}}
	if k, name := ServiceProvider(vs); k != KindVirtualRouter || name != "r" {
		t.Errorf("ServiceProvider = %s %s", k, name)
	}
	if k, _ := ServiceProvider(&VirtualServiceSpec{}); k != "" {
		t.Errorf("no provider gave %s", k)
	}
}

// TestKeepsRoutesPassesOverMalformed: a stored route that fits no router
// spec (none, or no exactly one route type) does not stop an update of its
// router or gateway, while a well-formed route left fitting no listener
// still does.
func TestKeepsRoutesPassesOverMalformed(t *testing.T) {
	router := &VirtualRouterSpec{Listeners: []VirtualRouterListener{{PortMapping: &PortMapping{Port: port(80), Protocol: PortProtocolHttp}}}}
	malformed := []*RouteSpec{nil, {}, {HttpRoute: &HttpRoute{}, TcpRoute: &TcpRoute{}}}
	if err := CheckRouterKeepsRoutes(router, []string{"nil", "none", "two"}, malformed); err != nil {
		t.Errorf("router with malformed routes only: %v", err)
	}
	err := CheckRouterKeepsRoutes(router, []string{"nil", "none", "grpc", "two"}, []*RouteSpec{malformed[0], malformed[1], {GrpcRoute: &GrpcRoute{}}, malformed[2]})
	if err == nil || !strings.Contains(err.Error(), "1 Route(s) match none. Listing up to 5 route names: [grpc]") {
		t.Errorf("router with a grpc route among malformed ones: %v, want only grpc named", err)
	}

	gw := &VirtualGatewaySpec{Listeners: []VirtualGatewayListener{{PortMapping: &VirtualGatewayPortMapping{Port: port(8080), Protocol: VirtualGatewayPortProtocolHttp}}}}
	gwMalformed := []*GatewayRouteSpec{nil, {}, {HttpRoute: &HttpGatewayRoute{}, GrpcRoute: &GrpcGatewayRoute{}}}
	if err := CheckGatewayKeepsRoutes(gw, []string{"nil", "none", "two"}, gwMalformed); err != nil {
		t.Errorf("gateway with malformed routes only: %v", err)
	}
	err = CheckGatewayKeepsRoutes(gw, []string{"none", "grpc"}, []*GatewayRouteSpec{gwMalformed[1], {GrpcRoute: &GrpcGatewayRoute{}}})
	if err == nil || !strings.Contains(err.Error(), "1 Gateway Route(s) match none. Listing up to 5 route names: [grpc]") {
		t.Errorf("gateway with a grpc route beside a malformed one: %v, want only grpc named", err)
	}
}
