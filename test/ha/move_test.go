package ha

import (
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	sdk "github.com/aws/aws-sdk-go-v2/service/appmesh"

	"github.com/weftmesh/weft/internal/store/etcdtest"
)

func weft(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("weft %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func nodes(t *testing.T, r *replica) []string {
	t.Helper()
	out, err := client(r).ListVirtualNodes(t.Context(), &sdk.ListVirtualNodesInput{MeshName: aws.String(mesh)})
	if err != nil {
		t.Fatalf("list on %s: %v", r.Name, err)
	}
	var names []string
	for _, vn := range out.VirtualNodes {
		names = append(names, aws.ToString(vn.VirtualNodeName))
	}
	slices.Sort(names)
	return names
}

// TestMoveBetweenStores: a single server's bbolt store is backed up live,
// copied onto etcd, served there, copied back to bbolt, and restored from
// the backup; every step serves the same mesh.
func TestMoveBetweenStores(t *testing.T) {
	bin := weftBinary(t)
	dir := t.TempDir()
	boltURL := "bolt://" + filepath.Join(dir, "one", "weft.db")
	single := startReplica(t, bin, "single", boltURL)
	setUpMesh(t, client(single), "front")
	want := nodes(t, single)
	if len(want) != 3 {
		t.Fatalf("nodes %v", want)
	}
	backup := filepath.Join(dir, "weft.backup")
	weft(t, bin, "backup", "--endpoint-url", "http://"+single.API, "--out", backup)
	single.Kill()

	c := etcdtest.Start(t, 1)
	weft(t, bin, "store", "copy", "--from", boltURL, "--to", etcdURL(c))
	onEtcd := startReplica(t, bin, "etcd", etcdURL(c))
	if got := nodes(t, onEtcd); !slices.Equal(got, want) {
		t.Fatalf("on etcd: %v, want %v", got, want)
	}
	// A copy never overwrites: the etcd store is not empty now.
	if out, err := exec.Command(bin, "store", "copy", "--from", boltURL, "--to", etcdURL(c)).CombinedOutput(); err == nil || !strings.Contains(string(out), "not empty") {
		t.Fatalf("copy onto a used store: %v\n%s", err, out)
	}
	onEtcd.Kill()

	backURL := "bolt://" + filepath.Join(dir, "back", "weft.db")
	weft(t, bin, "store", "copy", "--from", etcdURL(c), "--to", backURL)
	back := startReplica(t, bin, "back", backURL)
	if got := nodes(t, back); !slices.Equal(got, want) {
		t.Fatalf("copied back: %v, want %v", got, want)
	}
	back.Kill()

	restoredURL := "bolt://" + filepath.Join(dir, "restored", "weft.db")
	weft(t, bin, "restore", "--in", backup, "--store", restoredURL)
	restored := startReplica(t, bin, "restored", restoredURL)
	if got := nodes(t, restored); !slices.Equal(got, want) {
		t.Fatalf("restored: %v, want %v", got, want)
	}
}
