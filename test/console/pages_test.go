package console

import (
	"fmt"
	"slices"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/server"
)

// TestConsolePagination: a list longer than a page, of kinds of both APIs
// other than TestConsoleListsAndTags' virtual nodes, shows its first 50
// items and says there are more; "Load more" reads the rest with the
// answer's next token, after which there is nothing more; the search
// filters what was loaded. Each list holds 55 items written through the
// API, as the CLI would.
func TestConsolePagination(t *testing.T) {
	const n = 55
	// 55 routes in one router: above App Mesh's default quota of 50, raised
	// as an operator would (weft server --limits).
	e := newEnvWith(t, "", func(c *server.Config) {
		l := appmesh.DefaultLimits()
		l.RoutesPerVirtualRouter = n
		c.Limits = &l
	})
	e.mustAPI(t, "PUT", "/v20190125/meshes", map[string]any{"meshName": "pages"})
	e.mustAPI(t, "PUT", "/v20190125/meshes/pages/virtualNodes", map[string]any{"virtualNodeName": "node",
		"spec": map[string]any{"listeners": []any{map[string]any{"portMapping": map[string]any{"port": 8080, "protocol": "http"}}}}})
	e.mustAPI(t, "PUT", "/v20190125/meshes/pages/virtualRouters", map[string]any{"virtualRouterName": "router",
		"spec": map[string]any{"listeners": []any{map[string]any{"portMapping": map[string]any{"port": 8080, "protocol": "http"}}}}})
	ns := e.cloudMap(t, "CreateHttpNamespace", map[string]any{"Name": "pages", "CreatorRequestId": "pages"})
	nsID := e.cloudMap(t, "GetOperation", map[string]any{"OperationId": ns["OperationId"]})["Operation"].(map[string]any)["Targets"].(map[string]any)["NAMESPACE"].(string)
	var lastSvc string
	for i := range n {
		e.mustAPI(t, "PUT", "/v20190125/meshes/pages/virtualServices", map[string]any{"virtualServiceName": fmt.Sprintf("s-%02d.pages.local", i), "spec": map[string]any{}})
		e.mustAPI(t, "PUT", "/v20190125/meshes/pages/virtualRouter/router/routes", map[string]any{"routeName": fmt.Sprintf("r-%02d", i),
			"spec": map[string]any{"httpRoute": map[string]any{"match": map[string]any{"prefix": fmt.Sprintf("/%02d", i)},
				"action": map[string]any{"weightedTargets": []any{map[string]any{"virtualNode": "node", "weight": 1}}}}}})
		req := map[string]any{"Name": fmt.Sprintf("c-%02d", i), "NamespaceId": nsID, "CreatorRequestId": fmt.Sprintf("c-%02d", i)}
		if i == n-1 {
			req["HealthCheckCustomConfig"] = map[string]any{"FailureThreshold": 1} // its instances' health is set below
		}
		svc := e.cloudMap(t, "CreateService", req)
		lastSvc = svc["Service"].(map[string]any)["Id"].(string)
	}
	for i := range n {
		e.cloudMap(t, "RegisterInstance", map[string]any{"ServiceId": lastSvc, "InstanceId": fmt.Sprintf("i-%02d", i),
			"Attributes": map[string]string{"AWS_INSTANCE_IPV4": fmt.Sprintf("10.0.0.%d", i+1)}, "CreatorRequestId": fmt.Sprintf("i-%02d", i)})
	}
	e.cloudMap(t, "UpdateInstanceCustomHealthStatus", map[string]any{"ServiceId": lastSvc, "InstanceId": fmt.Sprintf("i-%02d", n-1), "Status": "UNHEALTHY"})
	for _, c := range []struct {
		name   string
		page   string // the list's view
		table  string // the list's table id
		more   string // its Load more button's id
		prefix string // its items' names start so, then 00 to 54
	}{
		{"App Mesh virtual services", "#/mesh/pages/list/virtualService", "list-virtualService", "more-virtualService", "s-"},
		{"App Mesh routes of a router", "#/mesh/pages/list/route/router", "list-route", "more-route", "r-"},
		{"Cloud Map services of a namespace", "#/cloudmap/ns/" + nsID, "services", "more-services", "c-"},
		{"Cloud Map instances of a service", "#/cloudmap/svc/" + lastSvc, "instances", "more-instances", "i-"},
	} {
		t.Run(c.name, func(t *testing.T) {
			rows := `document.querySelectorAll('#` + c.table + ` tbody tr').length`
			status := `document.querySelector('#view .status-line').textContent`
			more := `document.getElementById('` + c.more + `')`
			e.run(t, "the first page", chromedp.Navigate("about:blank"), chromedp.Navigate(e.base+"/console/"+c.page),
				chromedp.WaitVisible(css("#"+c.table)), poll(rows+` > 0`))
			if got, s := eval[int](t, e, rows), eval[string](t, e, status); got != 50 || s != "50 shown of 50 loaded (more on the server)" || !eval[bool](t, e, `!`+more+`.hidden`) {
				t.Fatalf("first page: %d rows, %q, Load more hidden: %v", got, s, eval[bool](t, e, more+`.hidden`))
			}
			e.run(t, "load more", chromedp.Click(css("#"+c.more)), poll(rows+` === 55`))
			if s := eval[string](t, e, status); s != "55 shown of 55 loaded" || !eval[bool](t, e, more+`.hidden`) {
				t.Fatalf("after Load more: %q, Load more hidden: %v", s, eval[bool](t, e, more+`.hidden`))
			}
			names := eval[[]string](t, e, `[...document.querySelectorAll('#`+c.table+` tbody tr')].map((r) => r.cells[0].textContent)`)
			want := make([]string, n)
			for i := range want {
				want[i] = fmt.Sprintf("%s%02d", c.prefix, i)
			}
			// Each once (Cloud Map lists in its own order, by id).
			if got := slices.Sorted(slices.Values(trimTo(slices.Clone(names), len(c.prefix)+2))); !slices.Equal(got, want) {
				t.Fatalf("after Load more: %q, want each of %s00-%s54 once", names, c.prefix, c.prefix)
			}
			// Instances on every page carry their health, read per page:
			// the last one was set unhealthy, the others are healthy.
			if c.table == "instances" {
				health := eval[[]string](t, e, `[...document.querySelectorAll('#instances tbody tr')].map((r) => r.dataset.instance + ' ' + r.querySelector('.health').textContent)`)
				for _, h := range health {
					if want := "HEALTHY"; h[5:] != want && h != fmt.Sprintf("i-%02d UNHEALTHY", n-1) {
						t.Fatalf("instances' health %q, want %s but i-%02d UNHEALTHY", health, want, n-1)
					}
				}
				if !slices.Contains(health, fmt.Sprintf("i-%02d UNHEALTHY", n-1)) {
					t.Fatalf("instances' health %q, want i-%02d UNHEALTHY", health, n-1)
				}
			}
			e.run(t, "search", chromedp.SendKeys(css(`#view input[type="search"]`), c.prefix+"5"), poll(rows+` === 5`))
			if s := eval[string](t, e, status); s != "5 shown of 55 loaded" {
				t.Fatalf("search %s5: %q", c.prefix, s)
			}
		})
	}
}

// trimTo cuts each name to its first n bytes (a service's name goes on
// with its domain).
func trimTo(names []string, n int) []string {
	for i, s := range names {
		names[i] = s[:min(n, len(s))]
	}
	return names
}
