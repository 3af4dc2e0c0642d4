package shim

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/ckpt-dev/ckpt/console"
	"github.com/ckpt-dev/ckpt/runtime/cgroupfs"
	rcontainer "github.com/ckpt-dev/ckpt/runtime/container"
	"github.com/ckpt-dev/ckpt/runtime/policy"
	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	"github.com/containerd/containerd/v2/pkg/stdio"
	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/log"
	"github.com/containerd/typeurl/v2"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/emptypb"
)

// exitGrace bounds the wait for an init's exit after the shim killed it
// (Delete of a created task, Kill or Delete of a held restore).
const exitGrace = 5 * time.Second

// Create creates the container: runc create, or, with a checkpoint, a
// restore that returns at setup-namespaces and is held until Start. Either
// way the pid is real.
func (s *service) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (_ *taskAPI.CreateTaskResponse, retErr error) {
	if err := s.reserve(r.ID); err != nil {
		return nil, toGRPC(err)
	}
	defer func() {
		if retErr != nil {
			s.release(r.ID, nil)
		}
	}()
	opts, err := createOptions(ctx, r)
	if err != nil {
		return nil, toGRPC(err)
	}
	if err := policy.SaveDefaults(r.Bundle, r.Options); err != nil {
		return nil, toGRPC(err)
	}
	rc := runtimeConfigOf(s.ns, opts)
	if err := rc.write(r.Bundle); err != nil {
		return nil, toGRPC(err)
	}
	facts, err := readSpecFacts(r.Bundle)
	if err != nil {
		return nil, toGRPC(err)
	}
	c := &container{
		id: r.ID, bundle: r.Bundle, runc: rc.newRunc(r.Bundle), ownPidNS: facts.ownPidNS, madeByCRI: facts.madeByCRI,
		ioUID: int(opts.IoUid), ioGID: int(opts.IoGid), execs: make(map[string]*process),
	}
	if len(r.Rootfs) > 0 {
		c.rootfs = filepath.Join(r.Bundle, "rootfs")
		if err := os.Mkdir(c.rootfs, 0o711); err != nil && !os.IsExist(err) {
			return nil, toGRPC(err)
		}
		mounts := mount.FromProto(r.Rootfs)
		if err := mount.All(mounts, c.rootfs); err != nil {
			return nil, toGRPC(fmt.Errorf("mount rootfs: %w", err))
		}
		defer func() {
			if retErr != nil {
				if err := mount.UnmountRecursive(c.rootfs, 0); err != nil {
					log.G(ctx).WithError(err).Warn("unmount rootfs after a failed create")
				}
			}
		}()
	}
	p := newProcess(c, "", stdio.Stdio{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal})
	c.init = p
	if p.io, err = newProcIO(s.ctx, p.stdio, c.ioUID, c.ioGID, c.id); err != nil {
		return nil, toGRPC(err)
	}
	defer func() {
		if retErr != nil {
			p.io.close()
		}
	}()

	w := s.watchExits(nil)
	if r.Checkpoint != "" {
		err = s.createRestore(ctx, c, p, r.Checkpoint, opts)
	} else {
		err = s.createFresh(ctx, c, p, opts)
	}
	if err != nil {
		s.unwatch(w)
		return nil, toGRPC(err)
	}
	s.release(r.ID, c)
	s.send(&eventstypes.TaskCreate{
		ContainerID: r.ID, Bundle: r.Bundle, Rootfs: r.Rootfs, Checkpoint: r.Checkpoint, Pid: uint32(p.Pid()),
		IO: &eventstypes.TaskIO{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal},
	})
	s.started(p, w)
	log.G(ctx).WithField("id", r.ID).WithField("pid", p.Pid()).WithField("restore", r.Checkpoint != "").Info("task created")
	return &taskAPI.CreateTaskResponse{Pid: uint32(p.Pid())}, nil
}

// createOptions reads runc's task options. Other types (Docker's
// runtimeoptions for a non-runc runtime, possibly not even registered
// here) are ignored, not refused.
func createOptions(ctx context.Context, r *taskAPI.CreateTaskRequest) (*options.Options, error) {
	opts := &options.Options{}
	if r.Options == nil || r.Options.GetTypeUrl() == "" {
		return opts, nil
	}
	if !typeurl.Is(r.Options, opts) {
		log.G(ctx).Warnf("ignoring task options of type %s", r.Options.GetTypeUrl())
		return opts, nil
	}
	if err := typeurl.UnmarshalTo(r.Options, opts); err != nil {
		return nil, fmt.Errorf("task options: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	return opts, nil
}

func (s *service) createFresh(ctx context.Context, c *container, p *process, opts *options.Options) error {
	var sock *console.Socket
	if p.stdio.Terminal {
		var err error
		if sock, err = console.NewSocket(); err != nil {
			return err
		}
		defer sock.Close()
	}
	pidFile := filepath.Join(c.bundle, "init.pid")
	copts := &runc.CreateOpts{PidFile: pidFile, NoPivot: opts.NoPivotRoot, NoNewKeyring: opts.NoNewKeyring}
	if err := setRuncIO(p, &copts.IO); err != nil {
		return err
	}
	if sock != nil {
		copts.ConsoleSocket = sock
	}
	// runc moves the new init into its cgroup; the lock's grace period
	// is paid while runc starts up.
	go cgroupfs.WarmMigration()
	if err := c.runc.Create(ctx, c.id, c.bundle, copts); err != nil {
		return runtimeError(c.runc, err, "runc create")
	}
	pid, err := runc.ReadPidFile(pidFile)
	if err == nil {
		p.setPid(pid)
		err = s.connectIO(p, sock)
	}
	if err != nil {
		if derr := deleteContainer(context.WithoutCancel(ctx), c.runc, c.id, true); derr != nil {
			log.G(ctx).WithError(derr).Warn("delete the container after a failed create")
		}
		return err
	}
	return nil
}

// setRuncIO gives runc the process's pipes, or /dev/null for a process
// without stdio. A terminal process gets neither: runc gives it the pty.
func setRuncIO(p *process, dst *runc.IO) error {
	switch {
	case p.io.pipes != nil:
		*dst = p.io.pipes
	case !p.stdio.Terminal:
		null, err := runc.NewNullIO()
		if err != nil {
			return err
		}
		*dst = null
	}
	return nil
}

// consoleTimeout bounds the wait for runc's pty master, which runc has
// sent before create or exec returns.
const consoleTimeout = 10 * time.Second

// connectIO starts the copies, for a terminal once runc sent the master.
func (s *service) connectIO(p *process, sock *console.Socket) error {
	if sock == nil {
		return p.io.start()
	}
	master, err := sock.Receive(consoleTimeout)
	if err != nil {
		return err
	}
	if err := p.io.attachConsole(master); err != nil {
		return err
	}
	// A terminal's logging binary (binary:// stdio) starts here.
	return p.io.start()
}

// createRestore starts CRIU; it returns at setup-namespaces (see Engine).
func (s *service) createRestore(ctx context.Context, c *container, p *process, checkpoint string, opts *options.Options) error {
	if s.engine == nil {
		return fmt.Errorf("restore: this shim has no checkpoint/restore engine: %w", errdefs.ErrNotImplemented)
	}
	// A mistake in the restore annotations fails before anything is made.
	annotations, err := policy.ReadAnnotations(c.bundle)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	work := workDir(c.bundle, opts.CriuWorkPath)
	c.criuWork = work
	if c.ctrdCheckpoint = ctrdCheckpointDir(checkpoint, opts, os.Getenv); c.ctrdCheckpoint != "" {
		// For `shim delete`, should this shim die before it removes it.
		if err := os.WriteFile(filepath.Join(c.bundle, ctrdCheckpointFile), []byte(c.ctrdCheckpoint), 0o600); err != nil {
			log.G(ctx).WithError(err).Warn("record containerd's checkpoint temp dir")
		}
	}
	req := rcontainer.RestoreOptions{
		Root: c.runc.Root, ID: c.id, Runc: c.runc.Command, Bundle: c.bundle,
		ImagePath: checkpoint, WorkPath: work, Stdio: p.io.childFiles(), Monitor: runc.Monitor,
		RootfsLate: c.madeByCRI,
	}
	if err := policy.ApplyRestoreAnnotations(&req, annotations); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if p.stdio.Terminal {
		req.Console = p.io.takeRestoredMaster
	}
	rs, err := s.engine.StartRestore(ctx, req)
	// CRIU has its own copies of the child ends by now (or failed).
	if p.io.pipes != nil {
		p.io.pipes.CloseAfterStart()
	}
	if err != nil {
		keepLog(work, "restore.log", c.bundle, "criu-restore.log")
		if uerr := mount.UnmountRecursive(work, 0); uerr != nil {
			log.G(ctx).WithError(uerr).Warn("unmount what CRIU left in its work dir")
		}
		c.dropCheckpoint(ctx)
		return fmt.Errorf("restore from %s: %w", checkpoint, err)
	}
	p.setPid(rs.Pid())
	// As runc create's --pid-file: `shim delete` reads it after a crash.
	if err := os.WriteFile(filepath.Join(c.bundle, "init.pid"), []byte(strconv.Itoa(rs.Pid())), 0o600); err != nil {
		log.G(ctx).WithError(err).Warn("write init.pid")
	}
	c.emu.Lock()
	c.restore = rs
	c.emu.Unlock()
	return p.io.start()
}

func (c *container) takeRestore() Restore {
	c.emu.Lock()
	defer c.emu.Unlock()
	rs := c.restore
	c.restore = nil
	return rs
}

// Start starts the init (runc start, or lets a held restore finish) or an
// exec.
func (s *service) Start(ctx context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	c, p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, toGRPC(err)
	}
	if !p.isInit() {
		return s.startExec(ctx, c, p)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := p.Status(); st != task.Status_CREATED {
		return nil, toGRPC(fmt.Errorf("start: task %q is %s: %w", c.id, st, errdefs.ErrFailedPrecondition))
	}
	w := s.watchExits(p)
	if rs := c.takeRestore(); rs != nil {
		err := rs.Finish(ctx)
		keepLog(c.criuWork, "restore.log", c.bundle, "criu-restore.log")
		c.dropCheckpoint(ctx)
		if err != nil {
			// CRIU killed the tree; the task stays, stopped, for Delete.
			s.started(p, w)
			s.awaitExit(ctx, p)
			return nil, toGRPC(fmt.Errorf("restore of %q failed: %w", c.id, err))
		}
		p.io.restoreFinished()
	} else if err := c.runc.Start(ctx, c.id); err != nil {
		s.started(p, w)
		return nil, toGRPC(runtimeError(c.runc, err, "runc start"))
	}
	releaseMemory()
	p.setStatus(task.Status_RUNNING)
	s.send(&eventstypes.TaskStart{ContainerID: c.id, Pid: uint32(p.Pid())})
	s.watchOOM(ctx, c, p.Pid())
	s.started(p, w)
	return &taskAPI.StartResponse{Pid: uint32(p.Pid())}, nil
}

// awaitExit waits for a killed init's exit; should it not come (a pid the
// shim does not reap), the exit is recorded as a SIGKILL.
func (s *service) awaitExit(ctx context.Context, p *process) {
	select {
	case <-p.exited:
		return
	case <-time.After(exitGrace):
	case <-ctx.Done():
	}
	s.lifecycleMu.Lock()
	if pid := p.Pid(); s.running[pid] == p {
		delete(s.running, pid)
	}
	s.lifecycleMu.Unlock()
	if !p.hasExited() {
		log.G(ctx).WithField("pid", p.Pid()).Warn("no exit seen for the killed init; recording it as killed")
		s.publishExit(p, runc.Exit{Pid: p.Pid(), Status: 128 + int(unix.SIGKILL), Timestamp: time.Now()})
	}
}

// abortRestore ends a restore held between Create and Start: CRIU kills
// the tree, whose exit is the init's.
func (s *service) abortRestore(ctx context.Context, c *container, rs Restore) error {
	err := rs.Abort(ctx)
	keepLog(c.criuWork, "restore.log", c.bundle, "criu-restore.log")
	c.dropCheckpoint(ctx)
	s.awaitExit(ctx, c.init)
	return err
}

// Delete deletes an exec, or the init and with it the container.
func (s *service) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	c, p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, toGRPC(err)
	}
	if !p.isInit() {
		if st := p.Status(); st != task.Status_STOPPED && st != task.Status_CREATED {
			return nil, toGRPC(fmt.Errorf("delete: exec %q is %s: %w", p.id, st, errdefs.ErrFailedPrecondition))
		}
		if p.io != nil {
			p.io.close()
		}
		c.emu.Lock()
		delete(c.execs, p.id)
		c.emu.Unlock()
		return deleteResponse(p), nil
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if rs := c.takeRestore(); rs != nil {
		if err := s.abortRestore(ctx, c, rs); err != nil {
			log.G(ctx).WithError(err).Warn("abort the held restore")
		}
	}
	switch p.Status() {
	case task.Status_CREATED:
		if err := deleteContainer(ctx, c.runc, c.id, true); err != nil {
			return nil, toGRPC(err)
		}
		s.awaitExit(ctx, p)
	case task.Status_STOPPED:
		if err := deleteContainer(ctx, c.runc, c.id, false); err != nil {
			return nil, toGRPC(err)
		}
	default:
		return nil, toGRPC(fmt.Errorf("delete: task %q is %s: %w", c.id, p.Status(), errdefs.ErrFailedPrecondition))
	}
	c.dropCheckpoint(ctx)
	p.io.close()
	c.emu.Lock()
	for _, e := range c.execs {
		if e.io != nil {
			e.io.close()
		}
	}
	c.execs = map[string]*process{}
	c.emu.Unlock()
	if c.criuWork != "" {
		// A CRIU killed mid-restore leaves its cgroup yard mounted there,
		// and containerd could not remove the bundle.
		if err := mount.UnmountRecursive(c.criuWork, 0); err != nil {
			log.G(ctx).WithError(err).Warn("unmount what CRIU left in its work dir")
		}
	}
	if c.rootfs != "" {
		if err := mount.UnmountRecursive(c.rootfs, 0); err != nil {
			log.G(ctx).WithError(err).Warn("unmount rootfs")
		}
	}
	s.mu.Lock()
	delete(s.containers, c.id)
	s.mu.Unlock()
	resp := deleteResponse(p)
	s.send(&eventstypes.TaskDelete{
		ContainerID: c.id, ID: c.id, Pid: resp.Pid, ExitStatus: resp.ExitStatus, ExitedAt: resp.ExitedAt,
	})
	return resp, nil
}

func deleteResponse(p *process) *taskAPI.DeleteResponse {
	status, at := p.exit()
	return &taskAPI.DeleteResponse{Pid: uint32(p.Pid()), ExitStatus: uint32(status), ExitedAt: protobuf.ToTimestamp(at)}
}

// Kill signals a process; before Start, a held restore is aborted.
func (s *service) Kill(ctx context.Context, r *taskAPI.KillRequest) (*emptypb.Empty, error) {
	c, p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, toGRPC(err)
	}
	if p.hasExited() {
		return nil, toGRPC(fmt.Errorf("kill: process already finished: %w", errdefs.ErrNotFound))
	}
	if !p.isInit() {
		pid := p.Pid()
		if pid <= 0 {
			return nil, toGRPC(fmt.Errorf("kill: exec %q is not started: %w", p.id, errdefs.ErrFailedPrecondition))
		}
		if err := unix.Kill(pid, unix.Signal(r.Signal)); err != nil {
			if err == unix.ESRCH {
				return nil, toGRPC(fmt.Errorf("kill: process already finished: %w", errdefs.ErrNotFound))
			}
			return nil, toGRPC(fmt.Errorf("kill exec %q: %w", p.id, err))
		}
		return empty, nil
	}
	if rs := c.takeRestore(); rs != nil {
		if err := s.abortRestore(ctx, c, rs); err != nil {
			return nil, toGRPC(err)
		}
		return empty, nil
	}
	if err := c.runc.Kill(ctx, c.id, int(r.Signal), &runc.KillOpts{All: r.All}); err != nil {
		if notRunning(err) {
			return nil, toGRPC(fmt.Errorf("kill: process already finished: %w", errdefs.ErrNotFound))
		}
		return nil, toGRPC(runtimeError(c.runc, err, "runc kill"))
	}
	return empty, nil
}

// workDir is where CRIU writes its log: the client's CriuWorkPath, or a
// dir in the bundle (not the image dir, which containerd tars).
func workDir(bundle, requested string) string {
	if requested != "" {
		return requested
	}
	return filepath.Join(bundle, "criu-work")
}

// keepLog copies CRIU's log next to the bundle, where the runc shim puts
// criu-dump.log, so that it outlives the work dir.
func keepLog(dir, name, bundle, as string) {
	data, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return
	}
	os.WriteFile(filepath.Join(bundle, as), data, 0o600)
}
