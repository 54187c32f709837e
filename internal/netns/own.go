package netns

import "errors"

// ErrNotRoot is OwnNamespace's answer to a process that cannot create a
// network namespace.
var ErrNotRoot = errors.New("not root")
