package migrate

import (
	"context"
	"fmt"
	"time"

	"github.com/ckpt-dev/ckpt/runtime/plan"
	tasks "github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/sirupsen/logrus"
)

// Runtime is ckpt's runtime type: the only one whose containers ckpt moves.
const Runtime = "io.containerd.ckpt.v2"

// DefaultTimeout bounds connecting and each preflight call.
const DefaultTimeout = 10 * time.Second

// Config is one move.
type Config struct {
	Source    Endpoint // the containerd the container runs under
	Target    Endpoint // the containerd it moves to
	Namespace string   // containerd namespace, the same on both sides
	ID        string   // the container, the same id on both sides
	// Copy is stop-and-copy: every page is moved before the container
	// runs on the target. Otherwise post-copy (postcopy.go).
	Copy  bool
	Stdio Stdio // the restored task's stdio on the target
	// PageServer is HOST:PORT the source's page server listens on in
	// post-copy: an address of the source host the target reaches.
	PageServer string
	// PageTLS is the page server's TLS on both ends (CRIU's --tls*
	// options); its files are paths that exist on both hosts.
	PageTLS plan.TLS
	// TransferTimeout bounds how long the source stays frozen serving
	// its memory in post-copy (DefaultTransferTimeout).
	TransferTimeout time.Duration
	// Timeout bounds connecting and each preflight call (DefaultTimeout).
	Timeout time.Duration
	// StepTimeout bounds the checkpoint, the copy and the restore each
	// (default 15 minutes: a dump of many GiB to a slow disk).
	StepTimeout time.Duration
	Log         *logrus.Entry
}

// Result is what a move measured.
type Result struct {
	// Downtime: from the checkpoint request until the task started on
	// the target (the container ran nowhere in between).
	Downtime time.Duration
	// Total: from the checkpoint request until every page is on the
	// target and the source is deleted.
	Total time.Duration
	// The downtime's parts: the checkpoint (until the image is in the
	// source's content store), the copy to the target's, the restore
	// (container and task made and started on the target).
	Checkpoint, Copy, Restore time.Duration
	// Copied is the bytes written to the target's content store.
	Copied int64
}

func (c *Config) defaults() error {
	if c.ID == "" || c.Namespace == "" {
		return fmt.Errorf("a container id and a namespace are needed: %w", errdefs.ErrInvalidArgument)
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.StepTimeout <= 0 {
		c.StepTimeout = 15 * time.Minute
	}
	if c.Log == nil {
		c.Log = logrus.NewEntry(logrus.StandardLogger())
	}
	if !c.Copy {
		if err := c.postCopyDefaults(); err != nil {
			return err
		}
	}
	c.Log = c.Log.WithFields(logrus.Fields{"container": c.ID, "namespace": c.Namespace})
	return nil
}

// move is one Run: what it found and what it made, for the rollback.
type move struct {
	cfg      Config
	log      *logrus.Entry
	src, dst *client.Client

	ctr    client.Container
	info   containers.Container
	image  images.Image // the container's image on the source
	stdio  cio.Config   // the source task's stdio, for restoring it there
	hasImg bool         // the target has the image already

	checkpoint client.Image // on the source
	srcTask    client.Task  // nil once deleted
	// post-copy: the source's exit; transferring while its frozen task
	// serves its memory; the annotations of the target's lazy restore.
	srcExit            <-chan client.ExitStatus
	waitCtx            context.Context // for srcExit, until Run returns
	transferring       bool
	restoreAnnotations map[string]string

	lease     *leases.Lease // on the target
	madeImage bool
	dstCtr    client.Container
	dstTask   client.Task
	rmFIFOs   func()
	copied    int64
	copiedAt  time.Time // the copy's end, for Result.Copy
	// checkpointAt is the checkpoint request, where the downtime starts.
	checkpointAt time.Time
}

// Run moves the container. It returns before the source is touched when
// the target cannot take it; after that, any failure (or ctx's end)
// before the task runs on the target puts the source back as it was.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if err := cfg.defaults(); err != nil {
		return Result{}, err
	}
	if err := cfg.Stdio.validate(); err != nil {
		return Result{}, err
	}
	for _, e := range []Endpoint{cfg.Source, cfg.Target} {
		if _, err := parseEndpoint(e); err != nil {
			return Result{}, err
		}
	}
	ctx = namespaces.WithNamespace(ctx, cfg.Namespace)
	mode := "post-copy"
	if cfg.Copy {
		mode = "stop-and-copy"
	}
	cfg.Log.WithFields(logrus.Fields{"from": cfg.Source.Address, "to": cfg.Target.Address, "mode": mode}).Info("moving")
	m := &move{cfg: cfg, log: cfg.Log}
	var stopWait context.CancelFunc
	m.waitCtx, stopWait = context.WithCancel(context.WithoutCancel(ctx))
	defer stopWait()
	if err := m.openSource(ctx); err != nil {
		return Result{}, err
	}
	defer m.src.Close()
	if err := m.preflight(ctx); err != nil {
		return Result{}, err
	}
	defer m.dst.Close()
	if err := ctx.Err(); err != nil {
		return Result{}, fmt.Errorf("interrupted before the checkpoint; the source was not touched: %w", err)
	}

	checkpoint := m.checkpointSource
	if !cfg.Copy {
		checkpoint = m.startTransfer
	}
	if err := checkpoint(ctx); err != nil {
		return Result{}, err
	}
	// The clock starts at the checkpoint request (checkpointAt): what
	// comes before it does not stop the source.
	start := m.checkpointAt
	checkpointed := time.Since(start)
	if err := m.toTarget(ctx); err != nil {
		return Result{}, m.rollback(ctx, err)
	}
	res := Result{Downtime: time.Since(start), Copied: m.copied, Checkpoint: checkpointed}
	res.Copy = m.copiedAt.Sub(start) - checkpointed
	res.Restore = res.Downtime - res.Checkpoint - res.Copy
	m.log.WithFields(logrus.Fields{"downtime": res.Downtime, "copied": res.Copied,
		"checkpoint": res.Checkpoint, "copy": res.Copy, "restore": res.Restore}).Info("the container runs on the target")
	if !cfg.Copy {
		m.clearRestoreAnnotations(context.WithoutCancel(ctx))
		if err := m.awaitTransfer(ctx); err != nil {
			return res, err
		}
	}
	m.finish(ctx)
	res.Total = time.Since(start)
	m.log.WithField("total", res.Total).Info("moved")
	return res, nil
}

func (m *move) openSource(ctx context.Context) error {
	src, err := Dial(m.cfg.Source, m.cfg.Namespace, m.cfg.Timeout)
	if err != nil {
		return fmt.Errorf("source containerd: %w", err)
	}
	m.src = src
	fail := func(err error) error { src.Close(); return err }
	pctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
	defer cancel()
	if _, err := src.Version(pctx); err != nil {
		return fail(reachError("source", m.cfg.Source.Address, err))
	}
	if m.ctr, err = src.LoadContainer(pctx, m.cfg.ID); err != nil {
		return fail(fmt.Errorf("source container %s in namespace %s: %w", m.cfg.ID, m.cfg.Namespace, err))
	}
	if m.info, err = m.ctr.Info(pctx); err != nil {
		return fail(fmt.Errorf("source container %s: %w", m.cfg.ID, err))
	}
	if m.info.Runtime.Name != Runtime {
		return fail(fmt.Errorf("container %s runs on %s; ckpt moves only %s containers: %w", m.cfg.ID, m.info.Runtime.Name, Runtime, errdefs.ErrFailedPrecondition))
	}
	if m.info.Image == "" || m.info.SnapshotKey == "" {
		return fail(fmt.Errorf("container %s has no image or snapshot to recreate it from: %w", m.cfg.ID, errdefs.ErrFailedPrecondition))
	}
	if m.image, err = src.ImageService().Get(pctx, m.info.Image); err != nil {
		return fail(fmt.Errorf("image %s of container %s: %w", m.info.Image, m.cfg.ID, err))
	}
	if m.srcTask, err = m.ctr.Task(pctx, nil); err != nil {
		return fail(fmt.Errorf("task of container %s: %w", m.cfg.ID, err))
	}
	st, err := m.srcTask.Status(pctx)
	if err != nil {
		return fail(fmt.Errorf("task of container %s: %w", m.cfg.ID, err))
	}
	if st.Status != client.Running {
		return fail(fmt.Errorf("task of container %s is %s, not running: %w", m.cfg.ID, st.Status, errdefs.ErrFailedPrecondition))
	}
	resp, err := src.TaskService().Get(pctx, &tasks.GetRequest{ContainerID: m.cfg.ID})
	if err != nil {
		return fail(fmt.Errorf("task of container %s: %w", m.cfg.ID, err))
	}
	p := resp.GetProcess()
	m.stdio = cio.Config{Terminal: p.GetTerminal(), Stdin: p.GetStdin(), Stdout: p.GetStdout(), Stderr: p.GetStderr()}
	return nil
}

// checkpointSource dumps the task into a checkpoint image in the source's
// content store; the task stops (CRIU's exit) and is deleted. The dump is
// not cut short by ctx: an interrupted checkpoint request could leave the
// task stopped without an image to bring it back from.
func (m *move) checkpointSource(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.StepTimeout)
	defer cancel()
	exitC, err := m.srcTask.Wait(cctx)
	if err != nil {
		return fmt.Errorf("wait on the source task: %w", err)
	}
	if err := m.checkpointImage(cctx, m.log.WithField("mode", "stop-and-copy")); err != nil {
		return err
	}
	select {
	case <-exitC:
	case <-time.After(30 * time.Second):
		return m.rollback(ctx, fmt.Errorf("the source task did not stop 30s after its checkpoint: %w", context.DeadlineExceeded))
	}
	if _, err := m.srcTask.Delete(cctx); err != nil {
		return m.rollback(ctx, fmt.Errorf("delete the checkpointed source task: %w", err))
	}
	m.srcTask = nil
	m.log.Info("source checkpointed and its task deleted")
	return nil
}

// checkpointImage checkpoints the source task into a checkpoint image in
// the source's content store (m.checkpoint), starting the downtime's
// clock. The task ends with its checkpoint (a lazy one: with its
// transfer).
func (m *move) checkpointImage(ctx context.Context, log *logrus.Entry) error {
	ref := fmt.Sprintf("ckpt-migrate/%s:%d", m.cfg.ID, time.Now().UnixNano())
	log.WithField("image", ref).Info("checkpointing the source")
	m.checkpointAt = time.Now()
	// TaskExit before Task: Task sends the options as they are then.
	img, err := m.ctr.Checkpoint(ctx, ref,
		client.WithCheckpointImage, client.WithCheckpointTaskExit, client.WithCheckpointTask,
		client.WithCheckpointRuntime, client.WithCheckpointRW)
	if err != nil {
		return m.checkpointFailed(ctx, err)
	}
	m.checkpoint = img
	return nil
}

// checkpointFailed reports a failed dump: ckpt's shim leaves the task
// running (thawed) after a failed dump, which is checked.
func (m *move) checkpointFailed(ctx context.Context, cause error) error {
	st, err := m.srcTask.Status(ctx)
	if err == nil && st.Status == client.Running {
		return fmt.Errorf("checkpoint of the source failed; the source runs on, untouched: %w", cause)
	}
	return fmt.Errorf("checkpoint of the source failed and its task is %v (%v): %w", st.Status, err, cause)
}

// toTarget copies the checkpoint and recreates the container there.
func (m *move) toTarget(ctx context.Context) error {
	// Not cut short by ctx: a Create the target carries out after the
	// client gave up would leave a lease nobody knows to delete.
	lctx, lcancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.Timeout)
	lease, err := m.dst.LeasesService().Create(lctx, leases.WithRandomID(), leases.WithExpiration(24*time.Hour),
		leases.WithLabel("ckpt.migrate/container", m.cfg.ID))
	lcancel()
	if err != nil {
		return fmt.Errorf("lease on the target: %w", err)
	}
	m.lease = &lease
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("interrupted: %w", err)
	}
	ctx = leases.WithLease(ctx, lease.ID)
	sctx, cancel := context.WithTimeout(ctx, m.cfg.StepTimeout)
	defer cancel()

	index := m.checkpoint.Target()
	cp := &copier{from: m.src.ContentStore(), to: m.dst.ContentStore(), log: m.log, every: 2 * time.Second}
	if cp.total, err = treeSize(sctx, cp.from, index); err != nil {
		return fmt.Errorf("size of the checkpoint: %w", err)
	}
	start := time.Now()
	m.log.WithField("bytes", cp.total).Info("copying the checkpoint to the target")
	err = cp.tree(sctx, index)
	m.copied = cp.copied.Load()
	m.copiedAt = time.Now()
	if err != nil {
		return err
	}
	m.log.WithFields(logrus.Fields{"copied": m.copied, "total": cp.total, "took": time.Since(start)}).Info("checkpoint copied")

	if !m.hasImg {
		// Marked before the call: an interrupted Create may still have
		// made it, and the target had no image of that name (preflight).
		m.madeImage = true
		if _, err := m.dst.ImageService().Create(sctx, images.Image{Name: m.image.Name, Target: m.image.Target, Labels: m.image.Labels}); err != nil {
			return fmt.Errorf("image %s on the target: %w", m.image.Name, err)
		}
		img := client.NewImage(m.dst, m.image)
		if err := img.Unpack(sctx, m.info.Snapshotter); err != nil {
			return fmt.Errorf("unpack image %s on the target: %w", m.image.Name, err)
		}
	}
	cpImg := client.NewImage(m.dst, images.Image{Name: m.checkpoint.Name(), Target: index})
	if m.dstCtr, err = m.dst.Restore(sctx, m.cfg.ID, cpImg,
		client.WithRestoreImage, client.WithRestoreSpec, client.WithRestoreRuntime, client.WithRestoreRW,
		withAnnotations(m.restoreAnnotations)); err != nil {
		return fmt.Errorf("create the container on the target: %w", err)
	}
	if len(m.info.Labels) > 0 {
		if _, err := m.dstCtr.SetLabels(sctx, m.info.Labels); err != nil {
			return fmt.Errorf("labels of the container on the target: %w", err)
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("interrupted: %w", err)
	}
	creator, rm, err := m.cfg.Stdio.creator(m.cfg.ID, m.stdio.Terminal)
	if err != nil {
		return err
	}
	m.rmFIFOs = rm
	// Like the dump, the restore is not cut short by ctx: the rollback
	// needs to know whether a task exists.
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.StepTimeout)
	defer rcancel()
	m.log.Info("restoring the task on the target")
	if m.dstTask, err = m.dstCtr.NewTask(rctx, creator, client.WithTaskCheckpoint(cpImg)); err != nil {
		return fmt.Errorf("restore on the target: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("interrupted: %w", err)
	}
	if err := m.dstTask.Start(rctx); err != nil {
		return fmt.Errorf("start the restored task on the target: %w", err)
	}
	return nil
}

// finish removes the source's container and checkpoint and the target's
// lease (the checkpoint's blobs there go with it). The move has
// succeeded: a failure here is logged, not returned.
func (m *move) finish(ctx context.Context) {
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	if m.srcTask != nil {
		// Post-copy: the task ended with the transfer.
		if _, err := m.srcTask.Delete(fctx); err != nil {
			m.log.WithError(err).Warn("delete the source task")
		}
	}
	if err := m.ctr.Delete(fctx, client.WithSnapshotCleanup); err != nil {
		m.log.WithError(err).Warn("delete the source container")
	}
	if err := m.src.ImageService().Delete(fctx, m.checkpoint.Name(), images.SynchronousDelete()); err != nil {
		m.log.WithError(err).Warn("delete the source's checkpoint image")
	}
	if err := m.dst.LeasesService().Delete(fctx, *m.lease, leases.SynchronousDelete); err != nil {
		m.log.WithError(err).Warn("delete the target's lease")
	}
	m.log.Info("source container deleted")
}
