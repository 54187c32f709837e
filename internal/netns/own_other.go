//go:build !linux

package netns

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// OwnNamespace needs Linux network namespaces.
func OwnNamespace(ctx context.Context, marker, family string, log io.Writer) error {
	return fmt.Errorf("a network namespace of its own: %w", errors.ErrUnsupported)
}
