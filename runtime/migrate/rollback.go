package migrate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/errdefs"
)

// rollback undoes a move that failed after the source was checkpointed:
// everything made on the target goes, and the source task is restored
// from its checkpoint with the stdio it had. It returns cause, with what
// could not be undone.
func (m *move) rollback(ctx context.Context, cause error) error {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.StepTimeout)
	defer cancel()
	m.log.WithError(cause).Warn("move failed: cleaning the target and restoring the source")
	if ctx.Err() != nil && !strings.Contains(cause.Error(), "interrupted") {
		cause = fmt.Errorf("interrupted: %w", cause)
	}
	errs := []error{fmt.Errorf("migrate %s: %w", m.cfg.ID, cause)}
	if err := m.cleanTarget(rctx); err != nil {
		errs = append(errs, fmt.Errorf("target not fully cleaned: %w", err))
	}
	if m.transferring {
		// Post-copy: the source is frozen, not gone.
		if err := m.abortTransfer(rctx); err != nil {
			errs = append(errs, err)
		} else {
			m.log.Info("the source runs on, thawed, with its memory")
			errs[0] = fmt.Errorf("%w (the source runs on, thawed; nothing was left on the target)", errs[0])
		}
		m.dropCheckpoint(rctx)
	} else if err := m.restoreSource(rctx); err != nil {
		errs = append(errs, err)
	} else {
		m.log.Info("the source runs again, restored from its checkpoint")
		errs[0] = fmt.Errorf("%w (the source runs again, restored from its checkpoint; nothing was left on the target)", errs[0])
	}
	return errors.Join(errs...)
}

// dropCheckpoint deletes the source's checkpoint image.
func (m *move) dropCheckpoint(ctx context.Context) {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	if err := m.src.ImageService().Delete(dctx, m.checkpoint.Name(), images.SynchronousDelete()); err != nil {
		m.log.WithError(err).Warn("delete the source's checkpoint image")
	}
}

func (m *move) cleanTarget(ctx context.Context) error {
	var errs []error
	if m.dstTask != nil {
		if _, err := m.dstTask.Delete(ctx, client.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete the target task: %w", err))
		}
	}
	if m.dstCtr != nil {
		if err := m.dstCtr.Delete(ctx, client.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete the target container: %w", err))
		}
	} else if m.dst != nil && m.checkpoint != nil {
		// Restore may have made the container and failed after (its
		// snapshot is the lease's, the record is not).
		if c, err := m.dst.LoadContainer(ctx, m.cfg.ID); err == nil {
			if err := c.Delete(ctx, client.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("delete the target container: %w", err))
			}
		}
	}
	if m.rmFIFOs != nil {
		m.rmFIFOs()
	}
	if m.madeImage {
		if err := m.dst.ImageService().Delete(ctx, m.image.Name); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete the image copied to the target: %w", err))
		}
	}
	if m.lease != nil {
		// Synchronous: the copied blobs and snapshots are gone on return.
		if err := m.dst.LeasesService().Delete(ctx, *m.lease, leases.SynchronousDelete); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete the target lease %s: %w", m.lease.ID, err))
		}
	}
	return errors.Join(errs...)
}

// restoreSource brings the source task back from its checkpoint.
func (m *move) restoreSource(ctx context.Context) error {
	if m.checkpoint == nil {
		return nil
	}
	if m.srcTask != nil {
		// Checkpointed (stopped) but not deleted yet.
		if _, err := m.srcTask.Delete(ctx, client.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			return m.sourceLost(fmt.Errorf("delete the stopped source task: %w", err))
		}
		m.srcTask = nil
	}
	task, err := m.ctr.NewTask(ctx, withPaths(m.stdio), client.WithTaskCheckpoint(m.checkpoint))
	if err != nil {
		return m.sourceLost(fmt.Errorf("restore the source: %w", err))
	}
	if err := task.Start(ctx); err != nil {
		task.Delete(ctx, client.WithProcessKill)
		return m.sourceLost(fmt.Errorf("start the restored source: %w", err))
	}
	m.dropCheckpoint(ctx)
	return nil
}

// sourceLost says where the checkpoint is, so that nothing is lost.
func (m *move) sourceLost(err error) error {
	return fmt.Errorf("%w; the source container %s has no task: its checkpoint is kept as image %s in the source containerd (namespace %s), to restore it from (a new task with that checkpoint, as `ctr task checkpoint` images are restored)",
		err, m.cfg.ID, m.checkpoint.Name(), m.cfg.Namespace)
}
