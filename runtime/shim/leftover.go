package shim

import "context"

// RemoveLeftover, when set (the shim's main sets the engine's), removes
// what a restore left when its shim was killed: criu's tasks, mounts and
// cgroups that runc knows nothing of. Stop, run by containerd after a
// shim died, calls it before runc's delete.
var RemoveLeftover func(ctx context.Context, root, id string) error
