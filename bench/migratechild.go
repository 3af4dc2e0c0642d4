package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/ckpt-dev/ckpt/runtime/migrate"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sirupsen/logrus"
)

// The migration modes, in table order.
const (
	modePostCopy  = "post-copy"
	modeStopCopy  = "stop-and-copy"
	modePlainPath = "ctr plain path"
)

var migrateModes = []string{modePostCopy, modeStopCopy, modePlainPath}

// migrateJob is one move, handed to a child process that runs in the
// source host's network namespace: the target's TLS endpoint is reachable
// only from there, as from a real source host, and the operator's client
// runs there too (Run dials on goroutines that no single thread's
// namespace would cover).
type migrateJob struct {
	Mode      string
	Source    string // the source containerd's socket
	Namespace string
	ID        string
	Target    migrate.Endpoint // tcp://HOST:PORT, mutual TLS
	SrcIP     string           // the source's veth address (page server)
	Stdout    string           // the moved task's stdout, a file on the target host
}

// migrateOutcome is what the child measured.
type migrateOutcome struct {
	Downtime time.Duration `json:"downtime_ns"`
	Total    time.Duration `json:"total_ns"`
	// TotalFromRun: Total is Run's own Result.Total (else Run's duration).
	TotalFromRun bool `json:"total_from_run,omitempty"`
	// TotalIsCall: Total is Run's whole call, connecting and preflight
	// included (no Result.Total).
	TotalIsCall bool `json:"total_is_call,omitempty"`
	// Phases are checkpoint (request to the image in the source content store), copy
	// (the blobs to the target) and restore (container and task created
	// and started on the target), where they could be told apart.
	Phases map[string]time.Duration `json:"phases_ns,omitempty"`
	// Refused is Run's error where it would not do the mode at all (the
	// source untouched): the mode is not available, not failed.
	Refused string `json:"refused,omitempty"`
	Err     string `json:"error,omitempty"`
}

// migrateChild is the child's main: a job on stdin, an outcome on stdout.
func migrateChild() error {
	var job migrateJob
	if err := json.NewDecoder(os.Stdin).Decode(&job); err != nil {
		return fmt.Errorf("migration job: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	var out migrateOutcome
	var err error
	switch job.Mode {
	case modePostCopy, modeStopCopy:
		out, err = runCkptMove(ctx, job)
	case modePlainPath:
		out, err = runPlainMove(ctx, job)
	default:
		err = fmt.Errorf("unknown mode %q", job.Mode)
	}
	if err != nil {
		out.Err = err.Error()
	}
	return json.NewEncoder(os.Stdout).Encode(out)
}

// runCkptMove is `ckpt migrate` as a library call: stop-and-copy, or
// post-copy with the source's page server on SrcIP.
func runCkptMove(ctx context.Context, job migrateJob) (migrateOutcome, error) {
	// Run's warnings and errors only, on stderr.
	logger := logrus.New()
	logger.SetOutput(os.Stderr)
	logger.SetLevel(logrus.WarnLevel)
	cfg := migrate.Config{
		Source: migrate.Endpoint{Address: job.Source}, Target: job.Target,
		Namespace: job.Namespace, ID: job.ID, Copy: job.Mode == modeStopCopy,
		Stdio: migrate.Stdio("file://" + job.Stdout), Log: logrus.NewEntry(logger),
	}
	if !cfg.Copy {
		port, err := freePort(job.SrcIP)
		if err != nil {
			return migrateOutcome{}, err
		}
		cfg.PageServer = net.JoinHostPort(job.SrcIP, fmt.Sprint(port))
	}
	t0 := time.Now()
	res, err := migrate.Run(ctx, cfg)
	ran := time.Since(t0)
	if err != nil {
		if errdefs.IsNotImplemented(err) {
			return migrateOutcome{Refused: err.Error()}, nil
		}
		return migrateOutcome{}, err
	}
	out := migrateOutcome{Downtime: res.Downtime, Total: res.Total, TotalFromRun: true, Phases: map[string]time.Duration{
		phaseCheckpoint: res.Checkpoint, phaseCopy: res.Copy, phaseRestore: res.Restore,
	}}
	if out.Total <= 0 {
		out.Total, out.TotalFromRun, out.TotalIsCall = ran, false, true
	}
	return out, nil
}

const (
	phaseCheckpoint = "checkpoint"
	phaseCopy       = "copy"
	phaseRestore    = "restore"
)

// freePort is a TCP port nothing listens on at ip, in this namespace.
func freePort(ip string) (int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return 0, fmt.Errorf("a free port for the page server: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// runPlainMove is what a user has without ckpt: the container on
// containerd's runc shim, moved with the calls `ctr container checkpoint
// --task` and `ctr container restore` make, the checkpoint's blobs copied
// between the two content stores in between. Downtime: the checkpoint
// call's start to the task started on the target; total: until the
// source's container and checkpoint are deleted, as Run ends.
func runPlainMove(ctx context.Context, job migrateJob) (migrateOutcome, error) {
	src, err := client.New(job.Source, client.WithDefaultNamespace(job.Namespace), client.WithTimeout(10*time.Second))
	if err != nil {
		return migrateOutcome{}, fmt.Errorf("source containerd: %w", err)
	}
	defer src.Close()
	dst, err := migrate.Dial(job.Target, job.Namespace, migrate.DefaultTimeout)
	if err != nil {
		return migrateOutcome{}, err
	}
	defer dst.Close()
	ctx = namespaces.WithNamespace(ctx, job.Namespace)
	ctr, err := src.LoadContainer(ctx, job.ID)
	if err != nil {
		return migrateOutcome{}, err
	}
	task, err := ctr.Task(ctx, nil)
	if err != nil {
		return migrateOutcome{}, err
	}
	exited, err := task.Wait(ctx)
	if err != nil {
		return migrateOutcome{}, err
	}
	ref := fmt.Sprintf("bench-checkpoint/%s:%d", job.ID, time.Now().UnixNano())

	t0 := time.Now()
	// TaskExit before Task: Task sends the options as they are then.
	img, err := ctr.Checkpoint(ctx, ref, client.WithCheckpointImage, client.WithCheckpointTaskExit,
		client.WithCheckpointTask, client.WithCheckpointRuntime, client.WithCheckpointRW)
	if err != nil {
		return migrateOutcome{}, fmt.Errorf("checkpoint: %w", err)
	}
	if err := waitExit(exited, 30*time.Second); err != nil {
		return migrateOutcome{}, fmt.Errorf("checkpointed task: %w", err)
	}
	// Both "hosts" share this machine's runc state and cgroups: the
	// source task must be gone before the target restores the same id.
	if _, err := task.Delete(ctx); err != nil {
		return migrateOutcome{}, fmt.Errorf("delete the source task: %w", err)
	}
	phases := map[string]time.Duration{phaseCheckpoint: time.Since(t0)}
	t1 := time.Now()
	lease, err := dst.LeasesService().Create(ctx, leases.WithRandomID(), leases.WithExpiration(time.Hour))
	if err != nil {
		return migrateOutcome{}, err
	}
	lctx := leases.WithLease(ctx, lease.ID)
	if err := copyTree(lctx, src.ContentStore(), dst.ContentStore(), img.Target()); err != nil {
		return migrateOutcome{}, fmt.Errorf("copy the checkpoint: %w", err)
	}
	phases[phaseCopy] = time.Since(t1)
	t2 := time.Now()
	cp := client.NewImage(dst, images.Image{Name: ref, Target: img.Target()})
	nc, err := dst.Restore(lctx, job.ID, cp, client.WithRestoreImage, client.WithRestoreSpec,
		client.WithRestoreRuntime, client.WithRestoreRW)
	if err != nil {
		return migrateOutcome{}, fmt.Errorf("restore the container on the target: %w", err)
	}
	nt, err := nc.NewTask(lctx, cio.LogFile(job.Stdout), client.WithTaskCheckpoint(cp))
	if err != nil {
		return migrateOutcome{}, fmt.Errorf("restore the task on the target: %w", err)
	}
	if err := nt.Start(lctx); err != nil {
		return migrateOutcome{}, fmt.Errorf("start the restored task: %w", err)
	}
	phases[phaseRestore] = time.Since(t2)
	out := migrateOutcome{Downtime: time.Since(t0), Phases: phases}
	if err := ctr.Delete(ctx, client.WithSnapshotCleanup); err != nil {
		return out, fmt.Errorf("delete the source container: %w", err)
	}
	if err := src.ImageService().Delete(ctx, ref, images.SynchronousDelete()); err != nil {
		return out, fmt.Errorf("delete the source's checkpoint: %w", err)
	}
	if err := dst.LeasesService().Delete(ctx, lease, leases.SynchronousDelete); err != nil {
		return out, fmt.Errorf("delete the target's lease: %w", err)
	}
	out.Total = time.Since(t0)
	return out, nil
}

// copyTree copies desc and every blob it refers to that the target lacks.
func copyTree(ctx context.Context, from content.Store, to content.Ingester, desc ocispec.Descriptor) error {
	return images.Walk(ctx, images.HandlerFunc(func(ctx context.Context, d ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		if err := copyBlob(ctx, from, to, d); err != nil {
			return nil, fmt.Errorf("blob %s: %w", d.Digest, err)
		}
		return images.Children(ctx, from, d)
	}), desc)
}

func copyBlob(ctx context.Context, from content.Provider, to content.Ingester, d ocispec.Descriptor) error {
	ra, err := from.ReaderAt(ctx, d)
	if err != nil {
		return err
	}
	defer ra.Close()
	w, err := content.OpenWriter(ctx, to, content.WithRef("bench-"+d.Digest.String()), content.WithDescriptor(d))
	if errdefs.IsAlreadyExists(err) {
		return nil
	}
	if err != nil {
		return err
	}
	defer w.Close()
	return content.Copy(ctx, w, content.NewReader(ra), d.Size, d.Digest)
}
