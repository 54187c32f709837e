//go:build race

package evloop

// raceOn: the race detector is on, which keeps some allocations the
// compiler otherwise elides (TestH2SendDataFromChainGrowsOutOnce).
const raceOn = true
