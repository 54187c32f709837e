package server

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	sdk "github.com/aws/aws-sdk-go-v2/service/appmesh"

	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/store/etcd"
	"github.com/weftmesh/weft/internal/store/etcdtest"
)

// logWatch is a log destination a test can wait on.
type logWatch struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{} // closed and replaced at every write
}

func newLogWatch() *logWatch { return &logWatch{changed: make(chan struct{})} }

func (l *logWatch) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	close(l.changed)
	l.changed = make(chan struct{})
	return len(p), nil
}

// wait returns when the log contains s, or fails the test at the deadline.
func (l *logWatch) wait(t *testing.T, s string, within time.Duration) {
	t.Helper()
	l.waitN(t, s, 1, within)
}

// waitN returns when the log contains s n times, or fails the test at
// the deadline.
func (l *logWatch) waitN(t *testing.T, s string, n int, within time.Duration) {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		found := strings.Count(l.buf.String(), s) >= n
		ch := l.changed
		l.mu.Unlock()
		if found {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("log has %q fewer than %d times within %v", s, n, within)
		}
	}
}

func etcdURL(c *etcdtest.Cluster) string {
	var hosts []string
	for _, e := range c.Endpoints() {
		hosts = append(hosts, strings.TrimPrefix(e, "http://"))
	}
	return "etcd://" + strings.Join(hosts, ",")
}

// waitStatus polls url until it answers want (an event: the server's state
// changed), failing at the deadline.
func waitStatus(t *testing.T, url string, want int, within time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(within)
	var last string
	for {
		resp, err := http.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == want {
				return string(body)
			}
			last = resp.Status + " " + string(body)
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: want %d within %v, last %s", url, want, within, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestServerOnEtcd: etcd unreachable at start is retried with the reason
// logged; once up, the API works; etcd lost while running makes writes
// answer 503 ServiceUnavailableException and /readyz 503 while the
// server keeps running; etcd back, both recover.
func TestServerOnEtcd(t *testing.T) {
	c := etcdtest.Start(t, 1)
	c.Members[0].Pause()
	logs := newLogWatch()
	cfg := Config{APIAddr: freeAddr(t), XDSAddr: freeAddr(t), Store: etcdURL(c), Region: "us-east-1", AccountID: "111122223333"}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, slog.New(slog.NewTextHandler(logs, nil))) }() // ends with cancel below
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	logs.wait(t, "store unreachable, retrying", 30*time.Second)
	c.Members[0].Resume()
	base := "http://" + cfg.APIAddr
	waitStatus(t, base+"/readyz", http.StatusOK, 60*time.Second)

	mesh := sdk.New(sdk.Options{Region: "us-east-1", BaseEndpoint: aws.String(base), RetryMaxAttempts: 1,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: "weft", SecretAccessKey: "weft"}, nil
		})})
	if _, err := mesh.CreateMesh(ctx, &sdk.CreateMeshInput{MeshName: aws.String("m1")}); err != nil {
		t.Fatal(err)
	}

	// A write that answered 503 may still be committed when etcd comes
	// back (its request was in etcd's socket when it stopped): as an AWS
	// client does, the retry below repeats the clientToken, and is
	// answered as the same request whichever way the first one went.
	c.Members[0].Pause()
	m2 := &sdk.CreateMeshInput{MeshName: aws.String("m2"), ClientToken: aws.String("m2-token")}
	_, err := mesh.CreateMesh(ctx, m2)
	wantAPIError(t, err, "ServiceUnavailableException", "cannot be reached")
	body := waitStatus(t, base+"/readyz", http.StatusServiceUnavailable, 30*time.Second)
	if !strings.Contains(body, "store unreachable") {
		t.Fatalf("/readyz body %q does not say why", body)
	}
	select {
	case err := <-done:
		t.Fatalf("server ended while etcd was paused: %v", err)
	default:
	}

	c.Members[0].Resume()
	waitStatus(t, base+"/readyz", http.StatusOK, 60*time.Second)
	if _, err := mesh.CreateMesh(ctx, m2); err != nil {
		t.Fatalf("create after etcd is back, with the same clientToken: %v", err)
	}
	out, err := mesh.ListMeshes(ctx, &sdk.ListMeshesInput{})
	if err != nil || len(out.Meshes) != 2 {
		t.Fatalf("list meshes: %v %v", out, err)
	}
}

// TestBackupNeedsItsAction: the backup holds the CA's keys; with a
// credentials file only a key allowed weft:GetBackup gets it.
func TestBackupNeedsItsAction(t *testing.T) {
	e := newAuthEnv(t, authFile)
	r := e.signedDo(t, "GET", "/v1/backup", "", "AKIDMESHA", "mesh-a-secret", "weft", time.Now())
	if r.status != http.StatusForbidden || !strings.Contains(r.message, "weft:GetBackup") {
		t.Fatalf("backup by a key without weft:GetBackup: %d %s %q", r.status, r.errType, r.message)
	}
	r = e.signedDo(t, "GET", "/v1/backup", "", "AKIDADMIN", "admin-secret", "weft", time.Now())
	if r.status != http.StatusOK || !strings.Contains(string(r.body), `"format":"weft-backup"`) || !strings.Contains(string(r.body), `"end":true`) {
		t.Fatalf("backup by the administrator: %d %.200s", r.status, r.body)
	}
}

// wrappedStore is how the server decorates its store (tracing, metrics):
// a struct embedding store.Store that overrides nothing.
type wrappedStore struct{ store.Store }

// TestReadyzThroughStoreWrapper: /readyz follows the etcd store's health
// when the handler gets the store behind a wrapper; a check that looked
// for Ping with a type assertion saw none there and answered 200 "ready"
// with the only member paused.
func TestReadyzThroughStoreWrapper(t *testing.T) {
	c := etcdtest.Start(t, 1)
	st, err := etcd.Open(t.Context(), etcd.Options{Endpoints: c.Endpoints(), RequestTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	h := newStoreHealth(wrappedStore{st})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", h.readyz)
	ts := httptest.NewServer(mux)
	defer ts.Close()

	waitStatus(t, ts.URL+"/readyz", http.StatusOK, 10*time.Second)
	c.Members[0].Pause()
	defer c.Members[0].Resume()
	body := waitStatus(t, ts.URL+"/readyz", http.StatusServiceUnavailable, 10*time.Second)
	if !strings.Contains(body, "store unreachable") {
		t.Fatalf("/readyz body %q does not say why", body)
	}
}
