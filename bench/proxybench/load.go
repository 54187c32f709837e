package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"
)

type result struct {
	achieved      float64
	p50, p99, max float64 // ms
	errors        int
}

// constantRate sends rate requests/s for d over conns keep-alive
// connections. Each request has a scheduled send time; its latency is
// measured from that time, so queueing behind a slow request counts
// (no coordinated omission).
func constantRate(url string, rate int, d time.Duration, conns int, tlsCfg *tls.Config) (lat []time.Duration, errs int, wall time.Duration) {
	tr := &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, DisableCompression: true, TLSClientConfig: tlsCfg}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	return sendScheduled(url, rate, d, conns, func(int) *http.Client { return client }, 1)
}

// sendScheduled sends rate requests/s to url for d from workers senders,
// worker w through clientOf(w). Each request has a scheduled send time and
// its latency is measured from it, so queueing behind a slow request
// counts (no coordinated omission). An answer other than 200 over HTTP
// major version proto is an error. Request i is scheduled at the start +
// i/rate, and lat[i] is its latency (tail.go lines the slowest up with the
// proxies' GCs by that time).
func sendScheduled(url string, rate int, d time.Duration, workers int, clientOf func(w int) *http.Client, proto int) (lat []time.Duration, errs int, wall time.Duration) {
	return sendAt(url, time.Now(), time.Second/time.Duration(rate), int(d.Seconds()*float64(rate)), workers, clientOf, proto)
}

// sendAt sends n requests to url, request i at start + i*interval, as
// sendScheduled.
func sendAt(url string, start time.Time, interval time.Duration, n, workers int, clientOf func(w int) *http.Client, proto int) (lat []time.Duration, errs int, wall time.Duration) {
	idx := make(chan int, n)
	lat = make([]time.Duration, n)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range workers {
		c := clientOf(w)
		wg.Add(1)
		go func() { // one sender's share of the requests; ends when idx closes
			defer wg.Done()
			for i := range idx {
				at := start.Add(time.Duration(i) * interval)
				if wait := time.Until(at); wait > 0 {
					time.Sleep(wait)
				}
				resp, err := c.Get(url)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 || resp.ProtoMajor != proto {
						err = fmt.Errorf("%s %d", resp.Proto, resp.StatusCode)
					}
				}
				lat[i] = time.Since(at)
				if err != nil {
					mu.Lock()
					errs++
					mu.Unlock()
				}
			}
		}()
	}
	for i := range n {
		idx <- i
	}
	close(idx)
	wg.Wait()
	return lat, errs, time.Since(start)
}

// summarize gives the rate and latency percentiles of pooled samples
// taken over wall time.
func summarize(lat []time.Duration, errs int, wall time.Duration) result {
	n := len(lat)
	if n == 0 {
		return result{}
	}
	slices.Sort(lat)
	ms := func(x time.Duration) float64 { return float64(x.Microseconds()) / 1000 }
	return result{achieved: float64(n) / wall.Seconds(), p50: ms(lat[n/2]), p99: ms(lat[n*99/100]), max: ms(lat[n-1]), errors: errs}
}

func warm(url string, tlsCfg *tls.Config) {
	constantRate(url, 500, 2*time.Second, 8, tlsCfg)
}
