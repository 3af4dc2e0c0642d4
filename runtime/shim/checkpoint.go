package shim

import (
	"context"
	"fmt"
	"slices"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/log"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"
)

// Checkpoint dumps the container into r.Path. containerd's client pauses
// the task first, so the container is usually frozen here.
func (s *service) Checkpoint(ctx context.Context, r *taskAPI.CheckpointTaskRequest) (*emptypb.Empty, error) {
	c, err := s.container(r.ID)
	if err != nil {
		return nil, toGRPC(err)
	}
	if s.engine == nil {
		return nil, toGRPC(fmt.Errorf("checkpoint: this shim has no checkpoint/restore engine: %w", errdefs.ErrNotImplemented))
	}
	opts, err := checkpointOptions(r.Options)
	if err != nil {
		return nil, toGRPC(err)
	}
	path := r.Path
	if path == "" {
		path = opts.ImagePath
	}
	if path == "" {
		return nil, toGRPC(fmt.Errorf("checkpoint: no image path: %w", errdefs.ErrInvalidArgument))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.init.Status(); st != task.Status_RUNNING && st != task.Status_PAUSED {
		return nil, toGRPC(fmt.Errorf("checkpoint: task %q is %s: %w", c.id, st, errdefs.ErrFailedPrecondition))
	}
	req := checkpointRequest(opts, path, workDir(c.bundle, opts.WorkPath))
	req.Root, req.ID, req.Runc = c.runc.Root, c.id, c.runc.Command
	// A terminal's pty is outside the container: CRIU needs shell-job
	// whether or not the client said so (Docker never does).
	req.ShellJob = req.ShellJob || c.init.stdio.Terminal
	req.WindowSize = c.init.windowSize()
	err = s.engine.Checkpoint(ctx, req)
	keepLog(req.WorkPath, "dump.log", c.bundle, "criu-dump.log")
	if err != nil {
		return nil, toGRPC(fmt.Errorf("checkpoint of %q (CRIU log: %s/criu-dump.log): %w", c.id, c.bundle, err))
	}
	log.G(ctx).WithField("id", c.id).WithField("path", path).WithField("exit", !req.LeaveRunning).Info("task checkpointed")
	s.send(&eventstypes.TaskCheckpointed{ContainerID: c.id, Checkpoint: path})
	return empty, nil
}

// checkpointOptions reads containerd's runc CheckpointOptions, the only
// type containerd accepts. No options at all is Docker with a runtime
// other than runc: its default is to stop the container (exit).
func checkpointOptions(a *anypb.Any) (*options.CheckpointOptions, error) {
	if a == nil || a.GetTypeUrl() == "" {
		return &options.CheckpointOptions{Exit: true}, nil
	}
	v, err := typeurl.UnmarshalAny(a)
	if err != nil {
		return nil, fmt.Errorf("checkpoint options: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	opts, ok := v.(*options.CheckpointOptions)
	if !ok {
		return nil, fmt.Errorf("checkpoint options of type %T (want containerd.runc.v1.CheckpointOptions): %w", v, errdefs.ErrInvalidArgument)
	}
	return opts, nil
}

// checkpointRequest maps containerd's options to CRIU's.
func checkpointRequest(opts *options.CheckpointOptions, path, work string) CheckpointRequest {
	return CheckpointRequest{
		ImagePath:      path,
		WorkPath:       work,
		LeaveRunning:   !opts.Exit,
		TCPEstablished: opts.OpenTcp,
		ExtUnixSK:      opts.ExternalUnixSockets,
		ShellJob:       opts.Terminal,
		FileLocks:      opts.FileLocks,
		EmptyNetNS:     slices.Contains(opts.EmptyNamespaces, "network"),
		CgroupsMode:    opts.CgroupsMode,
		Monitor:        runc.Monitor,
	}
}
