//go:build !linux

package exepages

// Release does nothing outside Linux.
func Release() (int64, error) { return 0, nil }

// ReleaseTables does nothing outside Linux.
func ReleaseTables() (int64, error) { return 0, nil }
