package translate

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"
)

// TestDeterministic translates every proxy of every case several times and
// requires byte-identical output: the wire bytes the xDS server hashes into
// versions, and the golden rendering. Go randomises map iteration, so
// repeated runs exercise every map the translator reads.
func TestDeterministic(t *testing.T) {
	for _, dir := range caseDirs(t) {
		v, owner := replay(t, dir)
		addEndpoints(v)
		for _, id := range proxies(v, owner) {
			first := wire(t, v, id)
			for range 5 {
				if got := wire(t, v, id); !bytes.Equal(got, first) {
					t.Fatalf("%s %s: output differs between runs", dir, goldenName(id))
				}
			}
		}
	}
}

// wire concatenates the deterministic encoding of every resource.
func wire(t *testing.T, v *View, id Identity) []byte {
	t.Helper()
	r, err := Translate(v, id)
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	opts := proto.MarshalOptions{Deterministic: true}
	for _, m := range resourceMessages(r) {
		b, err := opts.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b...)
	}
	return append(out, render(t, id, r)...)
}

func resourceMessages(r *Resources) []proto.Message {
	var ms []proto.Message
	for _, m := range r.Listeners {
		ms = append(ms, m)
	}
	for _, m := range r.Routes {
		ms = append(ms, m)
	}
	for _, m := range r.Clusters {
		ms = append(ms, m)
	}
	for _, m := range r.Endpoints {
		ms = append(ms, m)
	}
	return ms
}
