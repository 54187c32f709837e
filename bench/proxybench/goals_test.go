package main

import (
	"math"
	"slices"
	"testing"
)

// TestGoalVerdicts pins each goal's bound and which way it goes: a
// latency figure is missed only when the rounds put the path above
// haproxy beyond chance, whatever the pooled figures say.
func TestGoalVerdicts(t *testing.T) {
	rounds := func(above, below int) versus { return versus{above: above, below: below} }
	met := goalRow{cpu: 1.1, sat: 0.9, p50: rounds(6, 4), p99: rounds(7, 3), rss: 20,
		add: added{p50: 0.3, p99: 9}, twAdd: added{p50: 0.1, p99: 1}} // pooled far above: decides nothing
	cases := []struct {
		name string
		row  func(r goalRow) goalRow
		want []string
		none []string // not measured
	}{
		{"every goal met at its bound", func(r goalRow) goalRow { return r }, nil, nil},
		{"CPU over", func(r goalRow) goalRow { r.cpu = 1.11; return r }, []string{"CPU"}, nil},
		{"saturation under", func(r goalRow) goalRow { r.sat = 0.89; return r }, []string{"saturation"}, nil},
		{"saturation not measured", func(r goalRow) goalRow { r.sat = 0; return r }, nil, []string{"saturation"}},
		{"p50 above in 9 of 10", func(r goalRow) goalRow { r.p50 = rounds(9, 1); return r }, []string{"p50"}, nil},
		{"p99 above in 15 of 20", func(r goalRow) goalRow { r.p99 = rounds(15, 5); return r }, []string{"p99"}, nil},
		{"p99 above in 14 of 20: chance", func(r goalRow) goalRow { r.p99 = rounds(14, 6); return r }, nil, nil},
		{"p99 below in 10 of 10", func(r goalRow) goalRow { r.p99 = rounds(0, 10); return r }, nil, nil},
		{"RSS over", func(r goalRow) goalRow { r.rss = 20.1; return r }, []string{"RSS"}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cells, misses, unmeasured := c.row(met).cells()
			if !slices.Equal(misses, c.want) {
				t.Errorf("misses %q, want %q (cells %q)", misses, c.want, cells)
			}
			if !slices.Equal(unmeasured, c.none) {
				t.Errorf("not measured %q, want %q (cells %q)", unmeasured, c.none, cells)
			}
			if len(cells) != 5 {
				t.Errorf("%d cells, want 5: %q", len(cells), cells)
			}
		})
	}
}

// TestGoalRowsPairsTwins checks that each weft path is put against
// haproxy's path of its shape, with its figures over the twin's.
func TestGoalRowsPairsTwins(t *testing.T) {
	rep := report{
		adds: []added{{"one weft proxy h2c", 0.2, 2}, {"haproxy h2c", 0.25, 1.5}},
		rows: map[string]summary{
			"one weft proxy h2c": {perK: 0.18, rssMB: 12},
			"haproxy h2c":        {perK: 0.2, rssMB: 14},
			"app direct h2c":     {perK: 0.3},
		},
	}
	tl := tailSet{names: []string{"app direct h2c", "one weft proxy h2c", "haproxy h2c"}, runs: make([][]runSlice, 3)}
	rows := goalRows(rep, tl, map[string]float64{"one weft proxy h2c": 19000, "haproxy h2c": 20000})
	if len(rows) != 1 {
		t.Fatalf("%d rows, want 1: %+v", len(rows), rows)
	}
	r := rows[0]
	if r.path != "one weft proxy h2c" || r.twin != "haproxy h2c" {
		t.Fatalf("paired %q with %q", r.path, r.twin)
	}
	if r.cpu < 0.899 || r.cpu > 0.901 || r.sat < 0.949 || r.sat > 0.951 || r.rss != 12 || r.add.p99 != 2 || r.twAdd.p99 != 1.5 {
		t.Errorf("figures %+v, want CPU 0.9, saturation 0.95, RSS 12, added p99 2 against 1.5", r)
	}
}

// TestSatMediansForGoals checks that an interleaved saturation run gives
// the goals each path's median, and leaves out a path with no round.
func TestSatMediansForGoals(t *testing.T) {
	nan := math.NaN()
	got := satMedians([]satRun{
		{name: "one weft proxy", rps: []float64{100, nan, 300, 200}},
		{name: "haproxy", rps: []float64{nan, nan}},
	})
	if len(got) != 1 || got["one weft proxy"] != 200 {
		t.Errorf("medians %v, want one weft proxy 200 and no haproxy", got)
	}
}
