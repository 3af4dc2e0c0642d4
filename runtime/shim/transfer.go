package shim

import (
	"context"
	"fmt"
	"time"

	rcontainer "github.com/ckpt-dev/ckpt/runtime/container"
	"github.com/ckpt-dev/ckpt/runtime/policy"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
)

// A lazy checkpoint (post-copy migration) through containerd: a task
// Update sets the next checkpoint's lazy options (policy.ParseUpdate);
// the checkpoint then answers at CRIU's status-ready, its images in
// containerd's hands, while the container stays frozen and CRIU's page
// server serves its memory to the restore on the target. When the last
// page has been fetched CRIU ends the container, and its exit is the
// task's, as after any checkpoint that does not leave it running. A
// failed or aborted transfer leaves the container running, thawed.

// transfer is a running lazy transfer; settled is closed once its end has
// been taken into account (the task's status, the kept log).
type transfer struct {
	Transfer
	settled chan struct{}
}

// updateTransfer takes ckpt's task Update: options for the next
// checkpoint, or the abort of the running transfer.
func (s *service) updateTransfer(ctx context.Context, c *container, u policy.Update) error {
	if u.Abort {
		c.emu.Lock()
		t := c.transfer
		c.emu.Unlock()
		if t == nil {
			return fmt.Errorf("abort: task %q has no lazy transfer in progress: %w", c.id, errdefs.ErrFailedPrecondition)
		}
		log.G(ctx).WithField("id", c.id).Warn("aborting the lazy transfer: the task runs on")
		if err := t.Abort(ctx); err != nil {
			return err
		}
		select {
		case <-t.settled:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.next = u.Lazy
	log.G(ctx).WithField("id", c.id).WithField("page-server", u.Lazy.PageServer).Info("the next checkpoint is lazy")
	return nil
}

// startTransfer is a lazy checkpoint: it returns once the images are
// written, and watches the transfer. c.mu is held.
func (s *service) startTransfer(ctx context.Context, c *container, req rcontainer.CheckpointOptions) error {
	if req.LeaveRunning {
		return fmt.Errorf("lazy checkpoint of %q: the task ends when its memory has moved; checkpoint it with exit (containerd's CheckpointOptions.Exit): %w", c.id, errdefs.ErrInvalidArgument)
	}
	start := time.Now()
	t, err := s.engine.StartCheckpoint(ctx, req)
	if err != nil {
		keepLog(req.WorkPath, "dump.log", c.bundle, "criu-dump.log")
		return err
	}
	tr := &transfer{Transfer: t, settled: make(chan struct{})}
	c.emu.Lock()
	c.transfer = tr
	c.emu.Unlock()
	log.G(ctx).WithField("id", c.id).WithField("page-server", req.PageServer).WithField("ms", time.Since(start).Milliseconds()).
		Info("lazy checkpoint ready: the task is frozen, its memory served")
	go s.watchTransfer(c, tr, req)
	return nil
}

// transferring refuses what a frozen task serving its memory cannot do.
func transferring(c *container, what string) error {
	c.emu.Lock()
	defer c.emu.Unlock()
	if c.transfer != nil {
		return fmt.Errorf("%s: task %q is frozen, its memory being moved by a lazy transfer: %w", what, c.id, errdefs.ErrFailedPrecondition)
	}
	return nil
}

// watchTransfer waits for the end of a transfer (bounded by the lazy
// dump's TransferTimeout) and says how it ended.
func (s *service) watchTransfer(c *container, t *transfer, req rcontainer.CheckpointOptions) {
	ctx := log.WithLogger(context.Background(), log.G(context.Background()).WithField("id", c.id))
	start := time.Now()
	err := t.Wait(ctx)
	defer close(t.settled)
	c.emu.Lock()
	c.transfer = nil
	c.emu.Unlock()
	keepLog(req.WorkPath, "dump.log", c.bundle, "criu-dump.log")
	releaseMemory()
	if err != nil {
		log.G(ctx).WithError(err).Warn("lazy transfer ended without moving every page: the task runs on")
		c.mu.Lock()
		s.resyncPaused(ctx, c)
		c.mu.Unlock()
		return
	}
	log.G(ctx).WithField("took", time.Since(start)).Info("lazy transfer complete: every page moved, the task ended")
}
