package main

import (
	"fmt"
	"strconv"
	"strings"
)

// tracingOnly reads -tracing-only: a comma-separated list of sample
// rates (fractions, e.g. "0.01" or "0.01,1"). It returns the rates the
// tracing paths run at and, when the list is not empty, which paths the
// run keeps: only the ones that tracing's overhead is read from ("one
// weft proxy", no tracer; "one weft proxy B" with -weft-b, the noise
// between two builds without a tracer; and the tracing paths), so that a
// short quiet window holds more rounds of them. An empty list keeps
// -tracing's two paths (1 % and 100 %) and every path.
func tracingOnly(list string) (rates []string, keep func(path string) bool, err error) {
	if strings.TrimSpace(list) == "" {
		return []string{"0.01", "1"}, func(string) bool { return true }, nil
	}
	for _, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || !(f >= 0 && f <= 1) {
			return nil, nil, fmt.Errorf("-tracing-only %q: want sample rates in [0, 1], comma-separated", list)
		}
		rates = append(rates, s)
	}
	keep = func(path string) bool {
		return path == "one weft proxy" || path == "one weft proxy B" || strings.HasPrefix(path, "one weft proxy, tracing ")
	}
	return rates, keep, nil
}

// tracingPathName names the tracing path at rate ("0.01" is
// "one weft proxy, tracing 1%").
func tracingPathName(rate string) string {
	f, _ := strconv.ParseFloat(rate, 64)
	return "one weft proxy, tracing " + strconv.FormatFloat(f*100, 'f', -1, 64) + "%"
}
