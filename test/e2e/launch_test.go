package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/netns"
)

// launch starts an ECS task from a task definition as ECS would with
// awsvpc networking: its own namespace and address, the proxyConfiguration
// applied with weft intercept, the proxy container (as its user), the app
// container once the proxy is HEALTHY (dependsOn), and finally the Cloud
// Map registration of the task's address (serviceRegistries), if any.
func (w *world) launch(t *testing.T, name string, td taskDefinition, cloudMapService string) *task {
	t.Helper()
	ctx := context.Background()
	host, err := w.lab.AddHost(ctx, name, taskAddr(name), netns.HostOptions{Nameserver: ctlAddr})
	if err != nil {
		t.Fatal(err)
	}
	tk := &task{name: name, host: host, id: newTaskID(), logPath: filepath.Join(w.tmp, name+"-proxy.out")}
	w.tasks[name] = tk

	if pc := td.ProxyConfiguration; pc != nil {
		if pc.Type != "APPMESH" {
			t.Fatalf("%s: proxyConfiguration type %q", td.Family, pc.Type)
		}
		// The control plane's address is ignored too: in ECS it is a
		// regional endpoint outside the task, here it is on the bridge.
		ignored := strings.Join(append(strings.Split(td.proxyProperty("EgressIgnoredIPs"), ","), ctlAddr.String()), ",")
		args := []string{w.weft, "intercept",
			"--app-ports", td.proxyProperty("AppPorts"),
			"--ignored-uid", td.proxyProperty("IgnoredUID"),
			"--proxy-ingress-port", td.proxyProperty("ProxyIngressPort"),
			"--proxy-egress-port", td.proxyProperty("ProxyEgressPort"),
			"--egress-ignored-ips", ignored,
		}
		if p := td.proxyProperty("EgressIgnoredPorts"); p != "" {
			args = append(args, "--egress-ignored-ports", p)
		}
		if out, errOut, err := run(ctx, host, args...); err != nil {
			t.Fatalf("%s: weft intercept: %v\n%s%s", name, err, out, errOut)
		}
		// On the whole test, not this section: the task outlives it.
		w.t.Cleanup(func() {
			// Deleting the namespace drops its rules anyway; removing
			// them first checks that --remove works on a real task.
			if _, errOut, err := run(context.Background(), host, w.weft, "intercept", "--remove"); err != nil {
				w.t.Errorf("%s: weft intercept --remove: %v: %s", name, err, errOut)
			}
		})
	}

	proxyName := td.proxyContainer()
	uid := -1
	var appName string
	var appPort int
	for _, c := range td.ContainerDefinitions {
		if c.Name == proxyName {
			if c.User != "" {
				fmt.Sscan(c.User, &uid)
			}
			continue
		}
		appName = c.Name
		if len(c.PortMappings) > 0 {
			appPort = c.PortMappings[0].ContainerPort
		}
	}
	arn := strings.NewReplacer("<your-region>", w.region, "<your-account-id>", w.account).
		Replace(td.env(proxyName, "APPMESH_RESOURCE_ARN"))
	// The admin listener on the task's address too, as
	// docs/prometheus/weft-scrape.yml asks, for the Prometheus of section
	// 4 (the default, 127.0.0.1:9901, is unreachable from elsewhere).
	tk.proxy = w.start(name+" proxy", host, uid,
		[]string{"APPMESH_RESOURCE_ARN=" + arn, "APPMESH_XDS_ENDPOINT=" + w.xds, "WEFT_XDS_TOKEN_FILE=" + w.joinToken(t, name, arn, uid),
			"WEFT_PROXY_ADMIN_ADDR=0.0.0.0:9901"},
		tk.logPath, w.weft, "proxy")
	// The task definition's own health check, within its startTimeout.
	waitFor(t, name+" proxy healthy", 30*time.Second, func() (bool, error) {
		if done, err := tk.proxy.exited(); done {
			t.Fatalf("%s proxy exited: %v\n%s", name, err, tk.proxy.tail)
		}
		_, _, err := run(ctx, host, "sh", "-c", "curl -s http://localhost:9901/server_info | grep state | grep -q LIVE")
		return err == nil, err
	})

	if appName != "" {
		color := td.env(appName, "COLOR")
		tk.app = w.start(name+" app", host, -1, []string{"COLOR=" + color}, "", w.weft, "colorapp", "--listen", fmt.Sprintf(":%d", appPort))
		waitFor(t, name+" app healthy", 30*time.Second, func() (bool, error) {
			_, _, err := run(ctx, host, "sh", "-c", "curl -f http://localhost/health/ || exit 1")
			return err == nil, err
		})
	}

	if cloudMapService != "" {
		var op struct{ OperationId string }
		w.aws(&op, "servicediscovery", "register-instance",
			"--service-id", w.services[cloudMapService],
			"--instance-id", tk.id,
			"--attributes", strings.Join([]string{
				"AWS_INSTANCE_IPV4=" + host.Addr.String(),
				"AWS_INIT_HEALTH_STATUS=HEALTHY",
				"AVAILABILITY_ZONE=" + w.region + "a",
				"REGION=" + w.region,
				"ECS_CLUSTER_NAME=weft-e2e",
				"ECS_SERVICE_NAME=" + name + "-svc",
				"ECS_TASK_DEFINITION_FAMILY=" + td.Family,
			}, ","))
		w.waitOperation(op.OperationId)
	}
	return tk
}

// derivedTaskDefinition is red's task definition with the changes the
// tutorial lists for green and yellow.
func derivedTaskDefinition(t *testing.T, color string) taskDefinition {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "tutorial", "testdata", "ecs", "02e-red-td.json"))
	if err != nil {
		t.Fatal(err)
	}
	// \bred: red_node, red-app, "red", virtualNode/red, red-*-container;
	// not the "red" inside IgnoredUID.
	derived := regexp.MustCompile(`\bred`).ReplaceAllString(string(b), color)
	var td taskDefinition
	if err := json.Unmarshal([]byte(derived), &td); err != nil {
		t.Fatal(err)
	}
	if td.Family != color+"_node" || td.env(color+"-app", "COLOR") != color {
		t.Fatalf("derived task definition for %s is wrong: %+v", color, td)
	}
	return td
}
