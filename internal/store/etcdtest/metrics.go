package etcdtest

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// Handled is the etcd member's count (at clientURL) of gRPC calls of method
// ("Range", "Txn", ...) it answered OK, read from its /metrics.
func Handled(t testing.TB, clientURL, method string) float64 {
	t.Helper()
	resp, err := http.Get(clientURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "grpc_server_handled_total{") && strings.Contains(line, `grpc_code="OK"`) && strings.Contains(line, `grpc_method="`+method+`"`) {
			v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	return 0
}

// Counter is the sum of the counter called name that c (an etcd store)
// collects, over its series with the label given ("" for all).
func Counter(t testing.TB, c prometheus.Collector, name, label, value string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		sum := 0.0
		for _, m := range mf.GetMetric() {
			match := label == ""
			for _, l := range m.GetLabel() {
				match = match || l.GetName() == label && l.GetValue() == value
			}
			if match {
				sum += m.GetCounter().GetValue()
			}
		}
		return sum
	}
	if label == "" { // a counter always has its series, a vector not before its first count
		t.Fatalf("no metric %s", name)
	}
	return 0
}

// StoreCounts are what the conflict tests read of etcd stores' counters.
type StoreCounts struct {
	Conflicts, SequenceGuarded, FromMirror float64
}

// Counts sums, over stores, their conflicts, their commits guarded by
// the sequence key and their first reads answered by the mirror.
func Counts[S prometheus.Collector](t testing.TB, stores []S) StoreCounts {
	t.Helper()
	var c StoreCounts
	for _, st := range stores {
		c.Conflicts += Counter(t, st, "weft_store_etcd_conflicts_total", "", "")
		c.SequenceGuarded += Counter(t, st, "weft_store_etcd_sequence_guarded_commits_total", "", "")
		c.FromMirror += Counter(t, st, "weft_store_etcd_stale_first_reads_total", "outcome", "mirror")
	}
	return c
}
