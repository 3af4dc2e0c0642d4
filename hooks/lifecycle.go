package hooks

import (
	"context"
	"errors"
	"os"
	"sync"

	"github.com/ckpt-dev/ckpt/runtime/criu"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Container is what a container's hooks are told and run from.
type Container struct {
	ID string
	// Bundle is the bundle's absolute path: the State's bundle and the
	// working directory of hooks in the runtime namespace.
	Bundle      string
	Hooks       *specs.Hooks
	Annotations map[string]string
}

// Config describes one dump or restore of one container.
type Config struct {
	Op        Operation
	Container Container
	// ImageDir is CRTOOLS_IMAGE_DIR for action scripts; WorkDir their
	// working directory, CRIU's ("" = ImageDir).
	ImageDir, WorkDir string
	// NoActionScripts ignores the container's ActionScriptAnnotation
	// (`ckpt action-script` is itself an action script).
	NoActionScripts bool
	// Monitor starts and waits hooks and scripts for a process that reaps
	// every child itself (a containerd shim); nil: os/exec alone.
	Monitor runc.ProcessMonitor
	// Stateless is for a caller that handles each stage in a new process
	// (`ckpt action-script`): no stage knows whether an earlier one came,
	// so nothing is caught up (Step.CatchUp).
	Stateless bool
}

// Lifecycle runs the map (Steps) for one dump or restore of one container.
// CRIU sends one stage at a time; the methods may be called from any
// goroutine.
type Lifecycle struct {
	op        Operation
	container Container
	scripts   []string
	imageDir  string
	workDir   string
	runner    HookRunner
	stateless bool

	mu      sync.Mutex
	ran     map[criu.Stage]bool
	initPid int
	created bool
	deleted bool
}

// NewLifecycle checks the container's action-script annotation and returns
// the lifecycle of one operation.
func NewLifecycle(cfg Config) (*Lifecycle, error) {
	l := &Lifecycle{
		op: cfg.Op, container: cfg.Container, imageDir: cfg.ImageDir, workDir: cfg.WorkDir,
		runner: HookRunner{Dir: cfg.Container.Bundle, Monitor: cfg.Monitor}, ran: map[criu.Stage]bool{}, stateless: cfg.Stateless,
	}
	if l.workDir == "" {
		l.workDir = l.imageDir
	}
	if !cfg.NoActionScripts {
		s, err := ActionScripts(cfg.Container.Annotations)
		if err != nil {
			return nil, err
		}
		l.scripts = s
	}
	return l, nil
}

// StageError is a failure at a stage whose policy is not LogOnly. The
// caller answers CRIU false; for KillTree it also kills the restored tree.
type StageError struct {
	Op     Operation
	Stage  criu.Stage
	Policy Policy
	Err    error
}

func (e *StageError) Error() string { return e.Err.Error() }
func (e *StageError) Unwrap() error { return e.Err }

// Stage runs what the map puts at stage: the OCI hooks, then the action
// scripts. pid is the root task's host pid, 0 while CRIU has not told it.
// Failures with policy LogOnly are logged and nil is returned; others come
// back as a *StageError.
func (l *Lifecycle) Stage(ctx context.Context, stage criu.Stage, pid int) error {
	step := Lookup(l.op, stage)
	var catchUp *Step
	l.mu.Lock()
	if pid > 0 {
		l.initPid = pid
	}
	pid = l.initPid
	if step.CatchUp != "" && !l.ran[step.CatchUp] && !l.stateless {
		s := Lookup(l.op, step.CatchUp)
		catchUp = &s
		l.ran[step.CatchUp] = true
	}
	l.ran[stage] = true
	l.mu.Unlock()

	if catchUp != nil {
		if err := l.runHooks(ctx, *catchUp, pid); err != nil {
			return err
		}
	}
	if err := l.runHooks(ctx, step, pid); err != nil {
		return err
	}
	return l.runScripts(ctx, step, pid)
}

// Created reports whether the restore reached the runtime-spec's create
// hooks: from then on the container exists for its hooks, and a restore
// that fails owes it its poststop hooks (Delete).
func (l *Lifecycle) Created() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.created
}

// Delete runs the poststop hooks, once; failures are only logged.
func (l *Lifecycle) Delete(ctx context.Context) {
	l.mu.Lock()
	done := l.deleted
	l.deleted = true
	l.mu.Unlock()
	if !done {
		_ = l.runHooks(ctx, Lookup(Restore, TaskDelete), 0) // LogOnly: never an error
	}
}

// State is the runtime-spec State hooks get on stdin.
func (l *Lifecycle) State(status specs.ContainerState, pid int) specs.State {
	st := specs.State{
		Version: specs.Version, ID: l.container.ID, Status: status,
		Bundle: l.container.Bundle, Annotations: l.container.Annotations,
	}
	if status != specs.StateStopped {
		st.Pid = pid
	}
	return st
}

func (l *Lifecycle) runHooks(ctx context.Context, step Step, pid int) error {
	if len(step.Phases) == 0 {
		return nil
	}
	if step.Stage != TaskDelete {
		l.mu.Lock()
		l.created = true
		l.mu.Unlock()
	}
	state := l.State(step.Status, pid)
	for _, ph := range step.Phases {
		hooks := ph.HooksOf(l.container.Hooks)
		if len(hooks) == 0 {
			continue
		}
		log.G(ctx).WithFields(log.Fields{"stage": step.Stage, "phase": ph, "hooks": len(hooks), "where": step.Where}).Debug("running OCI hooks")
		if err := l.runner.RunPhase(ctx, ph, hooks, state, step.Where, pid); err != nil {
			return l.failure(ctx, step, step.HookFailure, err)
		}
	}
	return nil
}

// runScripts runs every script, as CRIU does, and fails the stage if any
// failed.
func (l *Lifecycle) runScripts(ctx context.Context, step Step, pid int) error {
	if !step.Scripts || len(l.scripts) == 0 {
		return nil
	}
	env := ScriptEnv(os.Environ(), step.Stage, l.imageDir, pid)
	var errs []error
	for _, s := range l.scripts {
		if err := runScript(ctx, s, env, l.workDir, step.Stage, l.runner.Monitor); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return l.failure(ctx, step, step.ScriptFailure, errors.Join(errs...))
}

func (l *Lifecycle) failure(ctx context.Context, step Step, policy Policy, err error) error {
	if policy == LogOnly || policy == "" {
		log.G(ctx).WithError(err).WithField("stage", step.Stage).Warn("failed; going on (the failure policy here is to log it)")
		return nil
	}
	return &StageError{Op: l.op, Stage: step.Stage, Policy: policy, Err: err}
}
