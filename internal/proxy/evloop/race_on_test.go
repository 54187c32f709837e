//go:build race

package evloop

// raceOn: the race detector is on, under which crypto/tls's sealing
// allocates (TestTLSKeptChainBatched counts allocations without it).
const raceOn = true
