// Package durability kills a real `weft server` in the middle of a stream
// of App Mesh writes and checks, after a restart on the same data
// directory, that every write it acknowledged is there.
package durability

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	sdk "github.com/aws/aws-sdk-go-v2/service/appmesh"
	"github.com/aws/aws-sdk-go-v2/service/appmesh/types"

	"github.com/weftmesh/weft/internal/weftbin"
)

const account = "111122223333"

// weftProcess is one running `weft server`.
type weftProcess struct {
	cmd    *exec.Cmd
	url    string
	exited chan error // receives Wait's result once the process ends
}

var listening = regexp.MustCompile(`msg="api listening" addr=(\S+)`)

// startWeft runs `weft server` on dir and returns once it listens. The
// process is killed at the end of the test if it is still running.
func startWeft(t *testing.T, bin, dir string) *weftProcess {
	t.Helper()
	// Every listener on a port of the kernel's choosing: the defaults
	// (xDS 15010, DNS 5353) would clash with another run or a real server.
	cmd := exec.Command(bin, "server", "--api-addr", "127.0.0.1:0", "--xds-addr", "127.0.0.1:0", "--dns-addr", "127.0.0.1:0",
		"--data-dir", dir, "--region", "us-east-1", "--account-id", account, "--appmesh-limits", "virtualNodesPerMesh=100000")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &weftProcess{cmd: cmd, exited: make(chan error, 1)}
	addr := make(chan string, 1)
	go func() { // reads stderr until the process closes it
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := listening.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case addr <- m[1]:
				default:
				}
			}
		}
		io.Copy(io.Discard, stderr)
		p.exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.exited
	})
	select {
	case a := <-addr:
		p.url = "http://" + a
	case err := <-p.exited:
		t.Fatalf("weft server exited before listening: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("weft server did not report listening within 30s")
	}
	return p
}

func client(url string) *sdk.Client {
	return sdk.New(sdk.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(url),
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: account, SecretAccessKey: "x"}, nil
		}),
		// One attempt: an error is an unacknowledged write.
		Retryer: retry.AddWithMaxAttempts(retry.NewStandard(), 1),
	})
}

// acked is what the server acknowledged for one virtual node.
type acked struct {
	uid     string
	version int64
	pending bool // an update was sent after the last acknowledged write
}

func nodeSpec(port int32) *types.VirtualNodeSpec {
	return &types.VirtualNodeSpec{Listeners: []types.Listener{{PortMapping: &types.PortMapping{Port: aws.Int32(port), Protocol: types.PortProtocolHttp}}}}
}

func TestKillDuringWrites(t *testing.T) {
	bin := weftbin.Build(t)
	dir := t.TempDir()
	ctx := t.Context()

	first := startWeft(t, bin, dir)
	c := client(first.url)
	if _, err := c.CreateMesh(ctx, &sdk.CreateMeshInput{MeshName: aws.String("crash")}); err != nil {
		t.Fatal(err)
	}

	const writers, killAfter = 16, 600
	var (
		mu    sync.Mutex
		state = map[string]*acked{}
		acks  atomic.Int64
		kill  sync.Once
		wg    sync.WaitGroup
	)
	for w := range writers {
		wg.Go(func() {
			for i := 0; ; i++ {
				name := fmt.Sprintf("w%02d-%05d", w, i)
				out, err := c.CreateVirtualNode(ctx, &sdk.CreateVirtualNodeInput{MeshName: aws.String("crash"), VirtualNodeName: &name, Spec: nodeSpec(80)})
				if err != nil {
					return // the server is gone
				}
				mu.Lock()
				a := &acked{uid: aws.ToString(out.VirtualNode.Metadata.Uid), version: 1, pending: true}
				state[name] = a
				mu.Unlock()
				up, err := c.UpdateVirtualNode(ctx, &sdk.UpdateVirtualNodeInput{MeshName: aws.String("crash"), VirtualNodeName: &name, Spec: nodeSpec(81)})
				if err != nil {
					return
				}
				mu.Lock()
				a.version, a.pending = aws.ToInt64(up.VirtualNode.Metadata.Version), false
				mu.Unlock()
				if acks.Add(2) >= killAfter {
					kill.Do(func() { first.cmd.Process.Signal(syscall.SIGKILL) })
				}
			}
		})
	}
	wg.Wait()
	if n := acks.Load(); n < killAfter {
		// Every writer stopped on an error before the kill: the server
		// is still running, and waiting for it to exit would hang.
		first.cmd.Process.Signal(syscall.SIGKILL)
		t.Fatalf("the writers stopped after %d acknowledged writes, before the kill at %d", n, killAfter)
	}
	if err := <-first.exited; err == nil {
		t.Fatal("weft server exited cleanly; it was meant to be killed")
	}
	first.exited <- nil // for the cleanup
	inFlight := 0
	for _, a := range state {
		if a.pending {
			inFlight++
		}
	}
	t.Logf("killed after %d acknowledged writes to %d nodes; %d updates unanswered", acks.Load(), len(state), inFlight)

	second := startWeft(t, bin, dir)
	c = client(second.url)
	for name, a := range state {
		out, err := c.DescribeVirtualNode(ctx, &sdk.DescribeVirtualNodeInput{MeshName: aws.String("crash"), VirtualNodeName: aws.String(name)})
		if err != nil {
			t.Fatalf("acknowledged node %s is gone: %v", name, err)
		}
		md := out.VirtualNode.Metadata
		v := aws.ToInt64(md.Version)
		if aws.ToString(md.Uid) != a.uid || (v != a.version && !(a.pending && v == a.version+1)) {
			t.Fatalf("node %s: uid %s version %d; acknowledged uid %s version %d (update in flight: %v)",
				name, aws.ToString(md.Uid), v, a.uid, a.version, a.pending)
		}
	}

	// SIGTERM shuts down gracefully: exit status 0.
	second.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-second.exited:
		if err != nil {
			t.Fatalf("weft server after SIGTERM: %v", err)
		}
		second.exited <- nil
	case <-time.After(30 * time.Second):
		t.Fatal("weft server did not stop within 30s of SIGTERM")
	}
}
