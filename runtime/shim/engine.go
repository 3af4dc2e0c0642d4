package shim

import (
	"context"

	rcontainer "github.com/ckpt-dev/ckpt/runtime/container"
)

// Engine does the CRIU work for the task service: runtime/container's
// Checkpoint and StartRestore behind an interface, so that the service's
// lifecycle can be tested against a fake (lifecycle_test.go). It takes
// runtime/container's own options: an option added there reaches the shim
// without a copy in between.
type Engine interface {
	// Checkpoint dumps the container runc runs under opts.Root into
	// opts.ImagePath. Without LeaveRunning its processes are gone
	// afterwards and runc's state is deleted.
	Checkpoint(ctx context.Context, opts rcontainer.CheckpointOptions) error
	// StartCheckpoint starts a lazy dump (opts.LazyPages) and returns at
	// CRIU's status-ready: the images (without memory) are in
	// opts.ImagePath, and the container stays frozen while CRIU's page
	// server serves its memory to one lazy restore.
	StartCheckpoint(ctx context.Context, opts rcontainer.CheckpointOptions) (Transfer, error)
	// StartRestore starts CRIU and returns at setup-namespaces: the
	// restored root task exists (Restore.Pid is real), nothing runs yet;
	// CRIU restores the mounts and is held before any other task.
	StartRestore(ctx context.Context, opts rcontainer.RestoreOptions) (Restore, error)
	// Pause and Resume freeze and thaw the container runc runs under root
	// as id, as `runc pause` and `runc resume` do, without an exec.
	Pause(ctx context.Context, root, id string) error
	Resume(ctx context.Context, root, id string) error
	// RemoveLeftover removes what a restore of id under root left when
	// the process that ran it died (its shim was killed): criu's tasks,
	// mounts, cgroups and state dir, which runc cannot see before CRIU's
	// post-restore. Nothing is done while that process lives.
	RemoveLeftover(ctx context.Context, root, id string) error
}

// Restore is a restore that StartRestore returned (see there).
type Restore interface {
	// Pid is the restored init's host pid.
	Pid() int
	// Finish lets CRIU complete; afterwards runc manages the container.
	Finish(ctx context.Context) error
	// Abort makes CRIU kill the restored tree and undo the restore.
	Abort(ctx context.Context) error
}

// Transfer is a lazy dump that StartCheckpoint returned (see there).
type Transfer interface {
	// Done is closed when the transfer has ended.
	Done() <-chan struct{}
	// Wait waits for its end. Success: every page was fetched and the
	// container is gone. Failure: the container runs on, thawed.
	Wait(ctx context.Context) error
	// Abort ends it early: the page server goes, the container runs on.
	Abort(ctx context.Context) error
}
