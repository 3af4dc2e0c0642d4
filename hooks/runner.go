package hooks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	runc "github.com/containerd/go-runc"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Phase is an OCI hook phase: the name of one list in config.json's
// "hooks".
type Phase string

// The runtime-spec's phases, in lifecycle order.
const (
	Prestart        Phase = "prestart"
	CreateRuntime   Phase = "createRuntime"
	CreateContainer Phase = "createContainer"
	StartContainer  Phase = "startContainer"
	Poststart       Phase = "poststart"
	Poststop        Phase = "poststop"
)

// HooksOf returns the hooks config.json lists for the phase.
func (p Phase) HooksOf(h *specs.Hooks) []specs.Hook {
	if h == nil {
		return nil
	}
	switch p {
	case Prestart:
		//lint:ignore SA1019 deprecated in the spec, still used (Docker, nvidia) and run by runc
		return h.Prestart
	case CreateRuntime:
		return h.CreateRuntime
	case CreateContainer:
		return h.CreateContainer
	case StartContainer:
		return h.StartContainer
	case Poststart:
		return h.Poststart
	case Poststop:
		return h.Poststop
	}
	return nil
}

// PathInContainer reports whether the spec resolves the phase's hook paths
// in the container namespace. Only startContainer's do: createContainer
// hooks run in the container but are found on the host.
func (p Phase) PathInContainer() bool { return p == StartContainer }

// Namespace says where a hook runs (runtime-spec glossary).
type Namespace string

const (
	// RuntimeNamespace is ckpt's own namespaces.
	RuntimeNamespace Namespace = "runtime"
	// ContainerNamespace is the namespaces of the container's init.
	ContainerNamespace Namespace = "container"
)

// DefaultOutputLimit bounds how much of a failed hook's stderr its error
// quotes: the end, where the reason usually is.
const DefaultOutputLimit = 4096

// outputGrace is how long a hook that exited may keep its stdout/stderr
// open (through a child it left behind) before ckpt stops reading.
const outputGrace = 2 * time.Second

// HookRunner runs OCI hooks as the runtime-spec says: path (absolute),
// args (args[0] is argv[0]), exactly the hook's env, the container's State
// as JSON on stdin, and the timeout in seconds after which the hook (and
// its process group) is killed. The zero value is ready to use.
type HookRunner struct {
	// Dir is the working directory of hooks in the runtime namespace;
	// runc runs them from the bundle. "" keeps ckpt's. Hooks in the
	// container namespace start in the container's root.
	Dir string
	// OutputLimit bounds the stderr an error quotes (0: DefaultOutputLimit).
	OutputLimit int
	// Monitor starts and waits the hooks for a process that reaps every
	// child itself (a containerd shim's reaper); nil: os/exec alone.
	Monitor runc.ProcessMonitor
}

// RunPhase runs hooks, the list of one phase, in order; the first failure
// stops the phase and is returned as a *HookError.
//
// In the container namespace, pid is the host pid of the container process
// whose namespaces the hooks enter (see startInContainer), and state.Pid
// becomes that process's pid as the container sees it, as the spec wants
// for hooks run there.
func (r *HookRunner) RunPhase(ctx context.Context, phase Phase, hooks []specs.Hook, state specs.State, ns Namespace, pid int) error {
	if len(hooks) == 0 {
		return nil
	}
	if ns == ContainerNamespace {
		inner, err := pidInContainer(pid)
		if err != nil {
			return &HookError{Phase: phase, Path: hooks[0].Path, ExitStatus: -1, Err: fmt.Errorf("the container's init: %w", err)}
		}
		state.Pid = inner
	}
	stdin, err := json.Marshal(state)
	if err != nil {
		return fmt.Errorf("%s hooks: encode the state: %w", phase, err)
	}
	for i, h := range hooks {
		if err := r.run(ctx, phase, i, h, stdin, ns, pid); err != nil {
			return err
		}
	}
	return nil
}

func (r *HookRunner) run(ctx context.Context, phase Phase, index int, h specs.Hook, stdin []byte, ns Namespace, pid int) error {
	herr := &HookError{Phase: phase, Index: index, Path: h.Path, ExitStatus: -1}
	if !filepath.IsAbs(h.Path) {
		herr.Err = errors.New("the path is not absolute")
		return herr
	}
	hctx := ctx
	if h.Timeout != nil {
		if *h.Timeout <= 0 {
			herr.Err = fmt.Errorf("timeout %d: it must be greater than zero", *h.Timeout)
			return herr
		}
		var cancel context.CancelFunc
		hctx, cancel = context.WithTimeout(ctx, time.Duration(*h.Timeout)*time.Second)
		defer cancel()
	}
	cmd := exec.CommandContext(hctx, h.Path)
	cmd.Args = h.Args
	if len(cmd.Args) == 0 {
		cmd.Args = []string{h.Path}
	}
	// A nil Env would hand the hook ckpt's environment.
	cmd.Env = h.Env
	if cmd.Env == nil {
		cmd.Env = []string{}
	}
	cmd.Stdin = bytes.NewReader(stdin)

	out, err := r.start(cmd, phase, ns, pid)
	if err != nil {
		herr.Err = err
		return herr
	}
	res := out.wait()
	herr.Stderr = res.stderr
	if res.ok() {
		log.G(ctx).WithFields(log.Fields{"phase": phase, "hook": h.Path, "stdout": res.stdout, "stderr": res.stderr}).Debug("hook ran")
		return nil
	}
	herr.ExitStatus, herr.Signal, herr.Err = res.exitStatus, res.signal, res.err
	if h.Timeout != nil && errors.Is(hctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil {
		herr.Timeout = time.Duration(*h.Timeout) * time.Second
	}
	return herr
}

// start starts cmd where the phase says, with its output captured.
func (r *HookRunner) start(cmd *exec.Cmd, phase Phase, ns Namespace, pid int) (*running, error) {
	limit := r.OutputLimit
	if limit <= 0 {
		limit = DefaultOutputLimit
	}
	run := prepare(cmd, limit, r.Monitor)
	var err error
	if ns == ContainerNamespace {
		err = startInContainer(cmd, run.start, pid, phase.PathInContainer())
	} else {
		cmd.Dir = r.Dir
		err = run.start()
	}
	if err != nil {
		return nil, err
	}
	return run, nil
}

// running is a started hook or script whose output is being captured.
type running struct {
	cmd            *exec.Cmd
	stdout, stderr *tailBuffer
	mon            runc.ProcessMonitor
	exits          chan runc.Exit
}

// prepare sets up cmd's output capture and its killing: the process gets a
// group of its own, so a timeout or cancellation kills what it started too.
func prepare(cmd *exec.Cmd, limit int, mon runc.ProcessMonitor) *running {
	r := &running{cmd: cmd, stdout: &tailBuffer{max: limit}, stderr: &tailBuffer{max: limit}, mon: mon}
	cmd.Stdout, cmd.Stderr = r.stdout, r.stderr
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.Cancel = func() error { return unix.Kill(-cmd.Process.Pid, unix.SIGKILL) }
	cmd.WaitDelay = outputGrace
	return r
}

// outcome is how a hook or script ended.
type outcome struct {
	exitStatus     int // -1: it did not exit normally
	signal         syscall.Signal
	err            error
	stdout, stderr string
}

func (o outcome) ok() bool { return o.err == nil }

func (r *running) start() error {
	if r.mon == nil {
		return r.cmd.Start()
	}
	ec, err := r.mon.Start(r.cmd)
	r.exits = ec
	return err
}

func (r *running) wait() outcome {
	if r.mon != nil {
		return r.waitMonitored()
	}
	err := r.cmd.Wait()
	o := outcome{exitStatus: -1, stdout: r.stdout.String(), stderr: r.stderr.String()}
	ps := r.cmd.ProcessState
	if ps != nil {
		if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			o.signal = ws.Signal()
		} else {
			o.exitStatus = ps.ExitCode()
		}
	}
	// A child the hook left behind with its stdout open is the hook's
	// business, not a failure of the hook.
	if errors.Is(err, exec.ErrWaitDelay) && ps != nil && ps.Success() {
		err = nil
	}
	o.err = err
	return o
}

// waitMonitored gets the exit status from the monitor: its reaper may have
// collected the process before os/exec could. The monitor reports a signal
// as 128+signal, the way a shell does.
func (r *running) waitMonitored() outcome {
	status, err := r.mon.Wait(r.cmd, r.exits)
	o := outcome{exitStatus: status, stdout: r.stdout.String(), stderr: r.stderr.String(), err: err}
	if err != nil {
		o.exitStatus = -1
	} else if status != 0 {
		o.err = fmt.Errorf("exit status %d", status)
	}
	return o
}

// HookError is a hook that failed: it could not be started, exited
// non-zero, was killed, or ran past its timeout.
type HookError struct {
	Phase Phase
	// Index is the hook's position in the phase's list.
	Index int
	Path  string
	// ExitStatus is -1 when the hook did not exit normally.
	ExitStatus int
	Signal     syscall.Signal
	// Timeout is set when the hook was killed for running past it.
	Timeout time.Duration
	// Stderr is the end of the hook's stderr (at most OutputLimit bytes).
	Stderr string
	Err    error
}

func (e *HookError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s hook %d (%s): ", e.Phase, e.Index, e.Path)
	describeEnd(&b, e.ExitStatus, e.Signal, e.Timeout, e.Err, e.Stderr)
	return b.String()
}

func (e *HookError) Unwrap() error { return e.Err }

// describeEnd says how a process ended, with its stderr.
func describeEnd(b *strings.Builder, status int, sig syscall.Signal, timeout time.Duration, err error, stderr string) {
	switch {
	case timeout > 0:
		fmt.Fprintf(b, "timed out after %gs and was killed", timeout.Seconds())
	case sig != 0:
		fmt.Fprintf(b, "killed by signal %s", unix.SignalName(sig))
	case status > 0:
		fmt.Fprintf(b, "exit status %d", status)
	case err != nil:
		b.WriteString(err.Error())
	default:
		b.WriteString("failed")
	}
	if s := strings.TrimSpace(stderr); s != "" {
		fmt.Fprintf(b, "; stderr: %q", s)
	}
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max       int
	buf       []byte
	truncated bool
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	n := len(p)
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
		t.truncated = true
	}
	return n, nil
}

func (t *tailBuffer) String() string {
	if t.truncated {
		return "..." + string(t.buf)
	}
	return string(t.buf)
}
