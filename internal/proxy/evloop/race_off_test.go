//go:build !race

package evloop

const raceOn = false
