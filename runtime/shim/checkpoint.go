package shim

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/ckpt-dev/ckpt/runtime/image"
	"github.com/ckpt-dev/ckpt/runtime/policy"
	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/log"
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
	req, err := policy.Requested(r.Options, c.bundle)
	if err != nil {
		return nil, toGRPC(err)
	}
	path := r.Path
	if path == "" {
		path = req.ImagePath
	}
	if path == "" {
		return nil, toGRPC(fmt.Errorf("checkpoint: no image path: %w", errdefs.ErrInvalidArgument))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := transferring(c, "checkpoint"); err != nil {
		return nil, toGRPC(err)
	}
	if st := c.init.Status(); st != task.Status_RUNNING && st != task.Status_PAUSED {
		return nil, toGRPC(fmt.Errorf("checkpoint: task %q is %s: %w", c.id, st, errdefs.ErrFailedPrecondition))
	}
	req.ImagePath, req.WorkPath = path, workDir(c.bundle, req.WorkPath)
	req.Root, req.ID, req.Runc, req.Monitor = c.runc.Root, c.id, c.runc.Command, runc.Monitor
	// A terminal's pty is outside the container: CRIU needs shell-job
	// whether or not the client said so (Docker never does).
	req.ShellJob = req.ShellJob || c.init.stdio.Terminal
	req.WindowSize = c.init.windowSize()
	if c.next != nil {
		c.next.Apply(&req) // once: the Update was for this checkpoint
		c.next = nil
	}
	if req.LazyPages {
		err = s.startTransfer(ctx, c, req)
	} else {
		err = s.engine.Checkpoint(ctx, req)
		releaseMemory()
		keepLog(req.WorkPath, "dump.log", c.bundle, "criu-dump.log")
	}
	if err != nil {
		s.resyncPaused(ctx, c)
		return nil, toGRPC(fmt.Errorf("checkpoint of %q (CRIU log: %s/criu-dump.log): %w", c.id, c.bundle, err))
	}
	if err := stampArchive(path); err != nil {
		log.G(ctx).WithError(err).Warn("stamp the checkpoint against Docker's re-upload collision")
	}
	log.G(ctx).WithField("id", c.id).WithField("path", path).WithField("exit", !req.LeaveRunning).WithField("lazy", req.LazyPages).Info("task checkpointed")
	s.send(&eventstypes.TaskCheckpointed{ContainerID: c.id, Checkpoint: path})
	return empty, nil
}

// archiveStamp is the mtime stampArchive gives ckpt.json: one second
// before 1970.
var archiveStamp = time.Unix(-1, 0)

// stampArchive makes the checkpoint's tar differ from any later re-tar of
// it. containerd stores a checkpoint as a tar of this dir; Docker extracts
// it into its own checkpoint dir and, on `docker start --checkpoint`,
// uploads a tar of that copy. The extraction keeps names, modes and
// (whole-second) mtimes, so that tar is byte-identical to the stored one,
// and Docker's upload fails with "content sha256:...: already exists"
// until containerd's garbage collector has removed the old blob. An mtime
// before 1970 is stored as it is, but containerd's extraction clamps it to
// 1970: the re-tar, and its digest, differ.
func stampArchive(dir string) error {
	p := filepath.Join(dir, image.MetadataFile)
	if _, err := os.Lstat(p); err != nil {
		return err
	}
	return os.Chtimes(p, archiveStamp, archiveStamp)
}

// resyncPaused corrects a paused task's status after a failed dump. CRIU
// thaws a frozen cgroup once it has seized the tasks (ptrace holds them)
// and freezes it again before it lets them go; a criu that dies in between
// leaves the container running. Left PAUSED, the client's Resume would be
// refused by runc ("container not paused") and the task reported paused
// for good.
func (s *service) resyncPaused(ctx context.Context, c *container) {
	if c.init.Status() != task.Status_PAUSED {
		return
	}
	st, err := c.runc.State(ctx, c.id)
	if err != nil || st.Status != "running" {
		return
	}
	log.G(ctx).WithField("id", c.id).Warn("the failed checkpoint left the paused container running (criu died before it froze it again)")
	c.init.setStatus(task.Status_RUNNING)
	s.send(&eventstypes.TaskResumed{ContainerID: c.id})
}
