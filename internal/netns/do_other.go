//go:build !linux

package netns

import (
	"errors"
	"fmt"
)

// Do needs Linux network namespaces.
func (h *Host) Do(fn func() error) error {
	return fmt.Errorf("enter namespace %s: %w", h.Name, errors.ErrUnsupported)
}
