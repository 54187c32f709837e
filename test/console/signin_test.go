package console

import (
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// TestConsoleSignIn: with a credentials file the console asks for an
// access key and then acts with exactly that key's permissions.
func TestConsoleSignIn(t *testing.T) {
	e := newEnvWith(t, `
keys:
  - id: AKIDMESHA
    secret: mesh-a-secret
    account: "444455556666"
    user: mesh-a-operator
    allow:
      - actions: ["appmesh:*"]
        resources: ["arn:aws:appmesh:*:444455556666:mesh/a", "arn:aws:appmesh:*:444455556666:mesh/a/*"]
      - actions: ["appmesh:ListMeshes", "weft:GetEvents", "weft:GetProxies"]
        resources: ["*"]
  - id: AKIDVIEW
    secret: view-secret
    account: "444455556666"
    user: node-viewer
    allow:
      - actions: ["appmesh:DescribeVirtualNode"]
        resources: ["arn:aws:appmesh:*:444455556666:mesh/a/virtualNode/seen"]
      - actions: ["appmesh:ListMeshes", "weft:GetEvents", "weft:GetProxies"]
        resources: ["*"]
`)
	e.submitForm(t, "wrong secret", "", [][2]string{{"#akid", "AKIDMESHA"}, {"#secret", "not-the-secret"}},
		"#sign-in", `.api-error[data-error-type="InvalidSignatureException"]`)
	e.screenshot(t, "sign-in-refused")
	checkContrast(t, e, "sign-in-refused")
	e.run(t, "sign in",
		poll(`(document.getElementById('secret').value = '', true)`),
		chromedp.SendKeys(css("#secret"), "mesh-a-secret"),
		chromedp.Click(css("#sign-in")),
		chromedp.WaitVisible(css("#list-mesh")),
		chromedp.WaitVisible(css("#sign-out")))
	if cookie := eval[string](t, e, `document.cookie`); strings.Contains(cookie, "weft_console") {
		t.Fatalf("the session cookie is readable from script: %q", cookie)
	}
	// Mesh a is this key's; mesh b is not.
	e.createViaForm(t, "#/new/mesh", [][2]string{{"#name", "a"}}, "#topology")
	e.run(t, "live topology as the key", poll(`document.getElementById('live').textContent.startsWith('live')`))
	e.run(t, "mesh b refused",
		chromedp.Navigate(e.base+"/console/#/new/mesh"),
		chromedp.WaitVisible(css("#submit")),
		chromedp.SendKeys(css("#name"), "b"),
		chromedp.Click(css("#submit")),
		chromedp.WaitVisible(css(`#form-result .api-error[data-error-type="AccessDeniedException"]`)))
	shown := value(t, e, "read the error", chromedp.Text(css("#form-result .api-error")))
	if !strings.Contains(shown, "arn:aws:iam::444455556666:user/mesh-a-operator is not authorized to perform: appmesh:CreateMesh on resource: arn:aws:appmesh:us-east-1:444455556666:mesh/b") {
		t.Fatalf("denial shown: %q", shown)
	}
	e.screenshot(t, "access-denied")
	checkContrast(t, e, "access-denied")
	for _, n := range []string{"seen", "hidden"} {
		e.createViaForm(t, "#/mesh/a/new/virtualNode", [][2]string{{"#name", n}, {"#f-hostname", n + ".local"}}, "#metadata")
	}
	// The page, before any script runs, holds the list as this key
	// reads it.
	e.withoutScripts(t, func() {
		e.run(t, "the meshes page without scripts, signed in", chromedp.Navigate("about:blank"), chromedp.Navigate(e.base+"/console/"),
			chromedp.WaitVisible(css(`#list-mesh a[href="#/mesh/a"]`)), chromedp.WaitVisible(css("#sign-out")))
	})
	e.run(t, "the meshes page with scripts", chromedp.Navigate("about:blank"), chromedp.Navigate(e.base+"/console/#/meshes"),
		chromedp.WaitVisible(css(`#list-mesh a[href="#/mesh/a"]`)), poll(`performance.getEntriesByName('weft-view').length > 0`))
	e.run(t, "sign out",
		chromedp.Click(css("#sign-out")),
		chromedp.WaitVisible(css("#sign-in")))
	// The API no longer takes the browser for the key.
	got := value(t, e, "API after sign-out", chromedp.Evaluate[string](`fetch('/v20190125/meshes').then(r => r.status + ' ' + r.headers.get('x-amzn-ErrorType'))`, chromedp.EvalAwaitPromise))
	if got != "403 MissingAuthenticationTokenException" {
		t.Fatalf("API after sign-out: %s", got)
	}
	// Signed out, the page holds the sign-in form and no mesh.
	e.withoutScripts(t, func() {
		e.run(t, "the meshes page without scripts, signed out", chromedp.Navigate("about:blank"), chromedp.Navigate(e.base+"/console/"),
			chromedp.WaitVisible(css("#sign-in")))
		if html := eval[string](t, e, viewHTML); strings.Contains(html, "list-mesh") || strings.Contains(html, "#/mesh/a") || strings.Contains(html, "mesh-a-operator") {
			t.Fatalf("the signed-out page holds the list or the key: %s", html)
		}
	})
	// A key that may Describe only node seen: the topology, drawn from
	// the event stream's snapshot, holds that node and nothing else.
	e.run(t, "sign in as the viewer",
		chromedp.Navigate(e.base+"/console/#/meshes"),
		chromedp.WaitVisible(css("#sign-in")),
		chromedp.WaitEnabled(css("#sign-in")),
		chromedp.SendKeys(css("#akid"), "AKIDVIEW"),
		chromedp.SendKeys(css("#secret"), "view-secret"),
		chromedp.Click(css("#sign-in")),
		chromedp.WaitVisible(css("#list-mesh")),
		chromedp.Navigate(e.base+"/console/#/mesh/a"),
		chromedp.WaitVisible(css(`#topology g[data-id="virtualNode:seen"]`)))
	if ids := eval[[]string](t, e, `[...document.querySelectorAll('#topology g.n')].map(g => g.dataset.id)`); strings.Join(ids, ",") != "virtualNode:seen" {
		t.Fatalf("the viewer's topology shows %v, want only virtualNode:seen", ids)
	}
	if !eval[bool](t, e, `window.__weftTopology.snapshot`) {
		t.Fatal("the viewer's topology was not drawn from the snapshot")
	}
}
