package shim

import (
	"context"
	"os"

	runc "github.com/containerd/go-runc"
)

// Engine does the CRIU work for the task service. It is runtime/container's
// Checkpoint and StartRestore behind an interface, so that the service builds
// and runs fresh containers without it, and tests can fake it.
type Engine interface {
	// Checkpoint dumps the container runc runs under req.Root into
	// req.ImagePath. Without LeaveRunning its processes are gone afterwards
	// and runc's state is deleted.
	Checkpoint(ctx context.Context, req CheckpointRequest) error
	// StartRestore starts CRIU and returns at setup-namespaces: the
	// restored root task exists (Restore.Pid is real), nothing runs yet;
	// CRIU restores the mounts and is held before any other task.
	StartRestore(ctx context.Context, req RestoreRequest) (Restore, error)
	// Pause and Resume freeze and thaw the container runc runs under root
	// as id, as `runc pause` and `runc resume` do, without an exec.
	Pause(ctx context.Context, root, id string) error
	Resume(ctx context.Context, root, id string) error
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

// WindowSize of a terminal, in characters.
type WindowSize struct {
	Rows, Cols uint16
}

// CheckpointRequest says which container to dump, where and how; the
// options are containerd's runc CheckpointOptions, mapped to CRIU's names.
type CheckpointRequest struct {
	// Root is runc's root dir, ID the container, Runc the runc binary.
	Root, ID, Runc string
	// ImagePath receives the images; WorkPath CRIU's log.
	ImagePath, WorkPath string
	// ParentPath is a pre-dump's image dir, for an incremental dump.
	ParentPath string

	LeaveRunning   bool
	TCPEstablished bool
	ExtUnixSK      bool
	ShellJob       bool
	FileLocks      bool
	EmptyNetNS     bool
	CgroupsMode    string
	// WindowSize is the terminal's, recorded for the restore.
	WindowSize *WindowSize
	// Monitor starts and waits criu and runc: the shim's reaper.
	Monitor runc.ProcessMonitor
}

// RestoreRequest says what to restore where.
type RestoreRequest struct {
	// Root is runc's root dir, ID the new container, Runc the runc binary.
	Root, ID, Runc string
	// Bundle holds config.json and the mounted rootfs.
	Bundle string
	// ImagePath is the checkpoint; WorkPath receives CRIU's restore.log.
	ImagePath, WorkPath string
	// Stdio become the restored init's stdio where it was a pipe (nil:
	// /dev/null). The engine does not close them.
	Stdio [3]*os.File
	// Console takes the restored pty master (terminal checkpoints).
	Console func(master *os.File) error
	// Monitor starts and waits criu: the shim's reaper.
	Monitor runc.ProcessMonitor
	// RootfsLate: the client writes into the rootfs between Create and
	// Start (the CRI plugin does); CRIU must not mount on it before Start.
	RootfsLate bool
	// Lazy restores with lazy pages (annotation io.ckpt.restore.lazy).
	Lazy *LazyRestore
}
