package container

import (
	"context"
	"errors"

	"github.com/ckpt-dev/ckpt/hooks"
	"github.com/ckpt-dev/ckpt/runtime/criu"
	"github.com/ckpt-dev/ckpt/runtime/runcstate"
	"github.com/containerd/log"
	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/utils"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// OCI hooks and CRIU action scripts of a restore or checkpoint: see
// hooks.Steps for where each runs.
//
// Poststop runs exactly once per restored container. After a successful
// restore runc owns the container: `runc delete` runs poststop from the
// state.json written at post-restore (its config carries the spec's
// hooks). When the restore fails after the create hooks began, runc never
// knew the container, so the cleanup runs poststop instead. A checkpoint
// without LeaveRunning ends the container with `runc delete`, which runs
// its poststop hooks.

// newRestoreHooks returns the hooks of a restore from the bundle's spec,
// or nil when the caller runs them itself.
func newRestoreHooks(opts RestoreOptions, spec *specs.Spec, cfg *configs.Config, imgPath string) (*hooks.Lifecycle, error) {
	if opts.SkipHooks {
		return nil, nil
	}
	return hooks.NewLifecycle(hooks.Config{
		Op: hooks.Restore,
		// The bundle as runc records it, so that runc's poststop gets the
		// same State.bundle as ckpt's hooks.
		Container: hooks.Container{ID: opts.ID, Bundle: runcstate.BundleOf(cfg), Hooks: spec.Hooks, Annotations: spec.Annotations},
		ImageDir:  imgPath, WorkDir: opts.WorkPath, Monitor: opts.Monitor,
	})
}

// onStage runs first at every notification: the caller's OnStage, then
// the hooks. CRIU ignores a false answer at pre-resume and post-resume and
// would resume the tree, so there a failed hook kills the tree before the
// answer.
func (r *Restoring) onStage(ctx context.Context, stage criu.Stage) error {
	pid := r.Pid()
	if r.opts.OnStage != nil {
		if err := r.opts.OnStage(ctx, stage, pid); err != nil {
			return err
		}
	}
	if r.hooks == nil {
		return nil
	}
	err := r.hooks.Stage(ctx, stage, pid)
	var se *hooks.StageError
	if errors.As(err, &se) && se.Policy == hooks.KillTree {
		r.killTree(ctx)
	}
	return err
}

// killTree kills every process of the container's cgroup but criu, which
// is in it too and must live to answer.
func (r *Restoring) killTree(ctx context.Context) {
	pids, err := r.cg.GetAllPids()
	if err != nil {
		log.G(ctx).WithError(err).Warn("cannot list the restored processes to kill them")
		return
	}
	r.mu.Lock()
	criuPid := r.criuPid
	r.mu.Unlock()
	killed := 0
	for _, p := range pids {
		if p != criuPid && unix.Kill(p, unix.SIGKILL) == nil {
			killed++
		}
	}
	log.G(ctx).WithField("processes", killed).Warn("a hook failed: killed the restored container")
}

// poststopAfterFailure runs poststop for a restore that failed after its
// create hooks began (see above). The restore's context may be cancelled
// by now; the hooks still run.
func (r *Restoring) poststopAfterFailure(ctx context.Context) {
	if r.hooks != nil && r.hooks.Created() {
		r.hooks.Delete(context.WithoutCancel(ctx))
	}
}

// checkpointStages returns the OnStage of a checkpoint: the caller's, then
// the container's action scripts (a dump runs no OCI hooks). The
// annotations are those runc recorded at create: config.json may have
// changed since, and must not affect the container (runtime-spec).
func checkpointStages(opts CheckpointOptions, cfg *configs.Config, imgPath string) (func(context.Context, criu.Stage, int) error, error) {
	onStage := opts.OnStage
	if opts.SkipHooks {
		return onStage, nil
	}
	bundle, annotations := utils.Annotations(cfg.Labels)
	l, err := hooks.NewLifecycle(hooks.Config{
		Op:        hooks.Dump,
		Container: hooks.Container{ID: opts.ID, Bundle: bundle, Annotations: annotations},
		ImageDir:  imgPath, WorkDir: opts.WorkPath, Monitor: opts.Monitor,
	})
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, stage criu.Stage, pid int) error {
		if onStage != nil {
			if err := onStage(ctx, stage, pid); err != nil {
				return err
			}
		}
		return l.Stage(ctx, stage, pid)
	}, nil
}

// declaresActionScripts reports whether CRIU action scripts will run for
// the container. criu running inside a loopback-only namespace
// (image.Options.CRIUInNetNS) leaves it out of the dump, and CRIU then
// has no network to lock: no network-lock or network-unlock stage comes.
// Scripts written for CRIU's CLI may expect them, so a container that
// declares scripts gets its namespace dumped empty, with every stage.
func declaresActionScripts(cfg *configs.Config, skipHooks bool) bool {
	if skipHooks {
		return false
	}
	_, annotations := utils.Annotations(cfg.Labels)
	scripts, err := hooks.ActionScripts(annotations)
	return err != nil || len(scripts) > 0
}
