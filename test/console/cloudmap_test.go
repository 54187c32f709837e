package console

import (
	"testing"

	"github.com/chromedp/chromedp"
)

// TestConsoleCloudMap: a namespace, a service and an instance created in
// the console, the instance's health set and shown, then deregistered.
func TestConsoleCloudMap(t *testing.T) {
	e := newEnv(t)
	e.run(t, "create a namespace",
		chromedp.Navigate(e.base+"/console/#/cloudmap"),
		chromedp.WaitVisible(css("#ns-create")),
		chromedp.SendKeys(css("#ns-name"), "colors.local"),
		poll(`(document.getElementById('ns-type').value = 'CreateHttpNamespace', true)`),
		chromedp.Click(css("#ns-create")),
		chromedp.WaitVisible(css(`#namespaces tbody a`)),
		chromedp.Click(css(`#namespaces tbody a`)),
		chromedp.WaitVisible(css("#svc-create")))
	e.run(t, "create a service with custom health",
		chromedp.SendKeys(css("#svc-name"), "blue"),
		chromedp.Click(css("#svc-create")),
		chromedp.WaitVisible(css(`#services tbody a`)),
		chromedp.Click(css(`#services tbody a`)),
		chromedp.WaitVisible(css("#inst-register")))
	e.run(t, "register an instance",
		chromedp.SendKeys(css("#inst-id"), "blue-1"),
		chromedp.Click(css("#inst-register")),
		chromedp.WaitVisible(css(`#instances tr[data-instance="blue-1"]`)))
	e.run(t, "set it unhealthy",
		chromedp.Click(css(`#instances tr[data-instance="blue-1"] button[data-health="UNHEALTHY"]`)),
		poll(`document.querySelector('#instances tr[data-instance="blue-1"] .health')?.textContent === 'UNHEALTHY'`))
	e.screenshot(t, "cloudmap-instances")
	checkContrast(t, e, "cloudmap-instances")
	e.run(t, "deregister it",
		chromedp.Click(css(`#instances tr[data-instance="blue-1"] button[data-deregister]`)),
		poll(`document.querySelector('#instances') && !document.querySelector('#instances tr[data-instance="blue-1"]')`))
}
