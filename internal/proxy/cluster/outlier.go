package cluster

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"

	"github.com/weftmesh/weft/internal/proxy/strict"
)

// outlierConfig is compiled outlier detection: consecutive 5xx and
// consecutive gateway failures, with Envoy's defaults.
type outlierConfig struct {
	consec5xx, consecGateway      int32
	enforce5xx, enforceGateway    uint32 // percent
	interval, baseEject, maxEject time.Duration
	maxEjectPercent               uint32
	alwaysEjectOne                bool
}

func buildOutlier(od *clusterv3.OutlierDetection, path string) (*outlierConfig, error) {
	// Success-rate and failure-percentage detection are not implemented;
	// setting any of their fields is NACKed. (Their defaults only act with
	// 5 or more hosts and 100 requests per interval per host.)
	if err := strict.Fields(od, path, "consecutive_5xx", "interval", "base_ejection_time",
		"max_ejection_percent", "enforcing_consecutive_5xx", "consecutive_gateway_failure",
		"enforcing_consecutive_gateway_failure", "max_ejection_time", "always_eject_one_host"); err != nil {
		return nil, err
	}
	o := &outlierConfig{consec5xx: 5, consecGateway: 5, enforce5xx: 100, enforceGateway: 0,
		interval: 10 * time.Second, baseEject: 30 * time.Second, maxEject: 300 * time.Second,
		maxEjectPercent: 10, alwaysEjectOne: od.GetAlwaysEjectOneHost().GetValue()}
	if v := od.GetConsecutive_5Xx(); v != nil {
		o.consec5xx = int32(v.GetValue())
	}
	if v := od.GetConsecutiveGatewayFailure(); v != nil {
		o.consecGateway = int32(v.GetValue())
	}
	if v := od.GetEnforcingConsecutive_5Xx(); v != nil {
		o.enforce5xx = v.GetValue()
	}
	if v := od.GetEnforcingConsecutiveGatewayFailure(); v != nil {
		o.enforceGateway = v.GetValue()
	}
	if v := od.GetInterval(); v != nil {
		o.interval = v.AsDuration()
	}
	if v := od.GetBaseEjectionTime(); v != nil {
		o.baseEject = v.AsDuration()
	}
	if v := od.GetMaxEjectionTime(); v != nil {
		o.maxEject = v.AsDuration()
	}
	if v := od.GetMaxEjectionPercent(); v != nil {
		o.maxEjectPercent = v.GetValue()
	}
	if o.interval <= 0 {
		return nil, fmt.Errorf("%s: interval must be positive", path)
	}
	if o.maxEject < o.baseEject {
		o.maxEject = o.baseEject
	}
	return o, nil
}

// outlierRecord counts a request outcome on h and ejects it when a
// consecutive-failure threshold is reached.
func (c *Cluster) outlierRecord(h *Host, code int, gatewayFailure bool) {
	o := c.outlier
	is5xx := code >= 500 || code == 0
	isGateway := gatewayFailure || code == 502 || code == 503 || code == 504
	if !is5xx {
		h.consec5xx.Store(0)
		h.consecGateway.Store(0)
		return
	}
	n5 := h.consec5xx.Add(1)
	ng := int32(0)
	if isGateway {
		ng = h.consecGateway.Add(1)
	} else {
		h.consecGateway.Store(0)
	}
	switch {
	case o.consec5xx > 0 && n5 == o.consec5xx:
		c.Stats.odDetected5xx.Inc()
		if enforced(o.enforce5xx) {
			c.eject(h, c.Stats.odEject5xx)
		}
	case o.consecGateway > 0 && ng == o.consecGateway:
		c.Stats.odDetectedGw.Inc()
		if enforced(o.enforceGateway) {
			c.eject(h, c.Stats.odEjectGateway)
		}
	}
}

func enforced(percent uint32) bool {
	return percent >= 100 || percent > 0 && rand.Uint32N(100) < percent
}

func (c *Cluster) eject(h *Host, why interface{ Inc() }) {
	o := c.outlier
	hosts := c.Hosts()
	ejected := 0
	for _, x := range hosts {
		if x.flags.Load()&outlierEjected != 0 {
			ejected++
		}
	}
	if h.flags.Load()&outlierEjected != 0 {
		return
	}
	if uint64(ejected+1)*100 > uint64(o.maxEjectPercent)*uint64(len(hosts)) && !(o.alwaysEjectOne && ejected == 0) {
		c.Stats.odOverflow.Inc()
		return
	}
	h.outlierMu.Lock()
	h.ejections++
	d := o.baseEject * time.Duration(h.ejections)
	if d > o.maxEject {
		d = o.maxEject
	}
	h.ejectedUntil = time.Now().Add(d)
	h.outlierMu.Unlock()
	h.consec5xx.Store(0)
	h.consecGateway.Store(0)
	h.setFlag(outlierEjected, true)
	c.Stats.odEjectTotal.Inc()
	c.Stats.odEjectEnforced.Inc()
	why.Inc()
	c.log.Info("host ejected by outlier detection", "host", h.Addr, "for", d)
}

// outlierLoop un-ejects hosts whose ejection time has passed, checking
// every interval as Envoy does.
func (c *Cluster) outlierLoop(ctx context.Context) {
	defer c.wg.Done()
	t := time.NewTicker(c.outlier.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			for _, h := range c.Hosts() {
				if h.flags.Load()&outlierEjected == 0 {
					continue
				}
				h.outlierMu.Lock()
				done := !now.Before(h.ejectedUntil)
				h.outlierMu.Unlock()
				if done {
					h.setFlag(outlierEjected, false)
					c.log.Info("host returned from outlier ejection", "host", h.Addr)
				}
			}
		}
	}
}
