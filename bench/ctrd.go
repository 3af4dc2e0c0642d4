package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/ckpt-dev/ckpt/internal/ctrd"
	"github.com/ckpt-dev/ckpt/runtime/image"
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
)

// runcShimRuntime is containerd's own runc shim, the peer ckpt is
// measured against.
const runcShimRuntime = "io.containerd.runc.v2"

// ctrdTarget checkpoints and restores through containerd's Go client, the
// same calls for every runtime: NewContainer(WithRuntime), NewTask,
// task.Checkpoint(WithCheckpointImagePath, exit), NewTask(WithRestoreImagePath),
// Start. Only the runtime differs between the runc shim and ckpt's.
type ctrdTarget struct {
	name, runtime string
	d             *ctrd.Daemon
	client        *client.Client
	clock         *rpcClock
	seq           int
}

func newCtrdTarget(d *ctrd.Daemon, name, runtime string, clock *rpcClock, c *client.Client) *ctrdTarget {
	return &ctrdTarget{name: name, runtime: runtime, d: d, client: c, clock: clock}
}

// timedClient is a second client of the daemon whose task calls are timed.
func timedClient(d *ctrd.Daemon, clock *rpcClock) (*client.Client, error) {
	return client.New(d.Address, client.WithDefaultNamespace(d.Namespace), client.WithTimeout(10*time.Second),
		client.WithExtraDialOpts([]grpc.DialOption{grpc.WithChainUnaryInterceptor(clock.interceptor)}))
}

func (t *ctrdTarget) Name() string { return t.name }

func (t *ctrdTarget) Supports(Workload) bool { return true }

func (t *ctrdTarget) Run(ctx context.Context, w Workload, dir string) (s Sample, retErr error) {
	ctx, cancel := context.WithTimeout(t.d.Context(ctx), 5*time.Minute)
	defer cancel()
	t.seq++
	id := fmt.Sprintf("%s-%s-%d", t.name, w.Name, t.seq)
	specOpts := []oci.SpecOpts{oci.WithImageConfig(t.d.Image), oci.WithProcessArgs(w.Args...)}
	if w.Terminal {
		specOpts = append(specOpts, oci.WithTTY)
	}
	c, err := t.client.NewContainer(ctx, id, client.WithNewSnapshot(id, t.d.Image),
		client.WithNewSpec(specOpts...), client.WithRuntime(t.runtime, nil))
	if err != nil {
		return s, fmt.Errorf("new container: %w", err)
	}
	defer t.remove(c)

	first := newConsole()
	defer first.Close()
	t0 := time.Now()
	task, err := c.NewTask(ctx, t.stdio(w, first))
	if err != nil {
		return s, fmt.Errorf("new task: %w", err)
	}
	exited, err := task.Wait(ctx)
	if err != nil {
		return s, err
	}
	if err := task.Start(ctx); err != nil {
		return s, fmt.Errorf("start: %w", err)
	}
	s.NewTask = time.Since(t0)
	if err := ready(ctx, w, first); err != nil {
		return s, err
	}
	s.NewShimRSS, _, s.NewShimAnonRSS = memOfAnon(shimPid(t.d.Address, id))

	// CRIU writes its statistics into the work dir, next to its log.
	images, work, restoreWork := filepath.Join(dir, "images"), filepath.Join(dir, "work"), filepath.Join(dir, "work-restore")
	t.clock.reset()
	t0 = time.Now()
	ci, err := task.Checkpoint(ctx, client.WithCheckpointImagePath(images), exitAfter(work))
	s.Checkpoint = time.Since(t0)
	s.RPC = &RPCTimes{Pause: t.clock.get("Pause"), Checkpoint: t.clock.get("Checkpoint"), Resume: t.clock.get("Resume")}
	if err != nil {
		return s, fmt.Errorf("checkpoint: %w", err)
	}
	// For a runtime it does not know, containerd's client also records a
	// checkpoint image (and the rw layer's diff) in its stores.
	if ci != nil && ci.Name() != "" {
		if err := t.client.ImageService().Delete(ctx, ci.Name()); err != nil {
			logrus.WithError(err).Warn("delete the checkpoint image record")
		}
	}
	pid := shimPid(t.d.Address, id)
	_, s.ShimPeakRSS = memOf(pid)
	if err := waitExit(exited, 30*time.Second); err != nil {
		return s, fmt.Errorf("checkpointed task: %w", err)
	}
	if _, err := task.Delete(ctx); err != nil {
		return s, fmt.Errorf("delete the checkpointed task: %w", err)
	}
	s.ImageBytes = dirSize(images)
	s.Dump, _ = readStats(work)
	s.Ckpt = ckptTimings(images)

	second := newConsole()
	defer second.Close()
	t.clock.reset()
	t0 = time.Now()
	task, err = c.NewTask(ctx, t.stdio(w, second), client.WithRestoreImagePath(images), client.WithRestoreWorkPath(restoreWork))
	create := time.Since(t0)
	if err != nil {
		return s, fmt.Errorf("restore (create): %w", err)
	}
	exited, err = task.Wait(ctx)
	if err != nil {
		return s, err
	}
	t0 = time.Now()
	err = task.Start(ctx)
	s.Restore = create + time.Since(t0)
	s.RPC.Create, s.RPC.Start = t.clock.get("Create"), t.clock.get("Start")
	if err != nil {
		return s, fmt.Errorf("restore (start): %w", err)
	}
	if err := t.runs(ctx, w, task, second); err != nil {
		return s, fmt.Errorf("restored task: %w", err)
	}
	var hwm int64
	shim := shimPid(t.d.Address, id)
	s.ShimRSS, hwm, s.ShimAnonRSS = memOfAnon(shim)
	// For -keep: where the shim's resident pages are, mapping by mapping.
	if smaps, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", shim)); err == nil {
		os.WriteFile(filepath.Join(dir, "shim-smaps"), smaps, 0o644)
	}
	s.ShimPeakRSS = max(s.ShimPeakRSS, hwm)
	_, s.Restored = readStats(restoreWork)
	if err := task.Kill(ctx, syscall.SIGKILL); err != nil {
		return s, fmt.Errorf("kill the restored task: %w", err)
	}
	if err := waitExit(exited, 30*time.Second); err != nil {
		return s, fmt.Errorf("killed restored task: %w", err)
	}
	if _, err := task.Delete(ctx); err != nil {
		return s, fmt.Errorf("delete the restored task: %w", err)
	}
	return s, nil
}

// stdio is the task's stdio: stdout and stderr into con's output, and for
// a terminal also typed input.
func (t *ctrdTarget) stdio(w Workload, con *console) cio.Creator {
	var in io.Reader
	opts := []cio.Opt{cio.WithFIFODir(filepath.Join(t.d.Dir, "fifo"))}
	if w.Terminal {
		in = con.in
		opts = append(opts, cio.WithTerminal)
	}
	return cio.NewCreator(append(opts, cio.WithStreams(in, con.out, con.out))...)
}

// ready waits until the workload is set up; a terminal shell is given
// state to keep.
func ready(ctx context.Context, w Workload, con *console) error {
	if w.Terminal {
		if err := con.typeLine(ttySetup); err != nil {
			return err
		}
		return con.out.waitFor(ctx, ttySetupWant, 30*time.Second)
	}
	return con.out.waitFor(ctx, w.Ready, 60*time.Second)
}

// runs checks that the restored workload is alive and has its state.
func (t *ctrdTarget) runs(ctx context.Context, w Workload, task client.Task, con *console) error {
	switch {
	case w.Terminal:
		if err := con.typeLine(ttyProbe); err != nil {
			return err
		}
		return con.out.waitFor(ctx, ttyProbeWant, 10*time.Second)
	case w.MemMiB > 0:
		return con.out.waitFor(ctx, "beat", 10*time.Second)
	case w.Procs > 0:
		pids, err := task.Pids(ctx)
		if err != nil {
			return err
		}
		if len(pids) < w.Procs {
			return fmt.Errorf("%d processes, want %d", len(pids), w.Procs)
		}
	}
	st, err := task.Status(ctx)
	if err != nil {
		return err
	}
	if st.Status != client.Running {
		return fmt.Errorf("status %s", st.Status)
	}
	return nil
}

// remove kills and deletes what is left of the container.
func (t *ctrdTarget) remove(c client.Container) {
	ctx, cancel := context.WithTimeout(t.d.Context(context.Background()), time.Minute)
	defer cancel()
	if task, err := c.Task(ctx, nil); err == nil {
		task.Kill(ctx, syscall.SIGKILL, client.WithKillAll)
		if _, err := task.Delete(ctx, client.WithProcessKill); err != nil {
			logrus.WithError(err).WithField("id", c.ID()).Warn("delete task")
		}
	}
	if err := c.Delete(ctx, client.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		logrus.WithError(err).WithField("id", c.ID()).Warn("delete container")
	}
}

// exitAfter makes the checkpoint stop the task (ctr's default leaves it
// running) and puts CRIU's log in work.
func exitAfter(work string) client.CheckpointTaskOpts {
	return func(info *client.CheckpointTaskInfo) error {
		if info.Options == nil {
			info.Options = &options.CheckpointOptions{}
		}
		opts, ok := info.Options.(*options.CheckpointOptions)
		if !ok {
			return fmt.Errorf("checkpoint options of type %T", info.Options)
		}
		opts.Exit, opts.WorkPath = true, work
		if *emptyNetNS {
			opts.EmptyNamespaces = []string{"network"}
		}
		return nil
	}
}

func waitExit(ch <-chan client.ExitStatus, timeout time.Duration) error {
	select {
	case st := <-ch:
		return st.Error()
	case <-time.After(timeout):
		return errors.New("no exit after " + timeout.String())
	}
}

// ckptTimings reads the spans ckpt recorded in ckpt.json, if it wrote one.
func ckptTimings(dir string) *CkptTimings {
	md, err := image.ReadMetadataPath(dir)
	if err != nil {
		return nil
	}
	return &CkptTimings{TotalMs: md.Timings.TotalMs, DumpMs: md.Timings.DumpMs, FreezeToPostDumpMs: md.Timings.FreezeToPostDumpMs}
}
