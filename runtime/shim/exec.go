package shim

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ckpt-dev/ckpt/console"
	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/pkg/stdio"
	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/emptypb"
)

// Exec records an exec; Start runs it.
func (s *service) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (*emptypb.Empty, error) {
	c, err := s.container(r.ID)
	if err != nil {
		return nil, toGRPC(err)
	}
	if c.init.hasExited() {
		return nil, toGRPC(fmt.Errorf("exec: task %q has exited: %w", c.id, errdefs.ErrFailedPrecondition))
	}
	var spec specs.Process
	if err := json.Unmarshal(r.Spec.GetValue(), &spec); err != nil {
		return nil, toGRPC(fmt.Errorf("exec %q: process spec: %w: %w", r.ExecID, err, errdefs.ErrInvalidArgument))
	}
	p := newProcess(c, r.ExecID, stdio.Stdio{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal})
	p.spec = &spec
	c.emu.Lock()
	if _, ok := c.execs[r.ExecID]; ok {
		c.emu.Unlock()
		return nil, toGRPC(fmt.Errorf("exec %q: %w", r.ExecID, errdefs.ErrAlreadyExists))
	}
	// The IO exists from here on, so that a ResizePty before Start is kept
	// for the terminal; Delete closes it.
	if p.io, err = newProcIO(s.ctx, p.stdio, c.ioUID, c.ioGID, c.id); err != nil {
		c.emu.Unlock()
		return nil, toGRPC(fmt.Errorf("exec %q: %w", r.ExecID, err))
	}
	c.execs[r.ExecID] = p
	c.emu.Unlock()
	s.send(&eventstypes.TaskExecAdded{ContainerID: c.id, ExecID: r.ExecID})
	return empty, nil
}

func (s *service) startExec(ctx context.Context, c *container, p *process) (*taskAPI.StartResponse, error) {
	if st := p.Status(); st != task.Status_CREATED {
		return nil, toGRPC(fmt.Errorf("start: exec %q is %s: %w", p.id, st, errdefs.ErrFailedPrecondition))
	}
	if !s.execStarting(c) {
		return nil, toGRPC(fmt.Errorf("start exec %q: the task's init has exited: %w", p.id, errdefs.ErrFailedPrecondition))
	}
	w := s.watchExits(nil)
	if err := s.runExec(ctx, c, p); err != nil {
		if p.Pid() > 0 {
			// It ran after all (the console failed): its exit is the
			// exit to report.
			p.setStatus(task.Status_RUNNING)
			s.started(p, w)
		} else {
			s.unwatch(w)
			s.execFailed(c)
		}
		return nil, toGRPC(err)
	}
	p.setStatus(task.Status_RUNNING)
	s.send(&eventstypes.TaskExecStarted{ContainerID: c.id, ExecID: p.id, Pid: uint32(p.Pid())})
	s.started(p, w)
	return &taskAPI.StartResponse{Pid: uint32(p.Pid())}, nil
}

func (s *service) runExec(ctx context.Context, c *container, p *process) (retErr error) {
	defer func() {
		if retErr != nil && p.Pid() == 0 {
			p.io.close()
		}
	}()
	var sock *console.Socket
	if p.stdio.Terminal {
		var err error
		if sock, err = console.NewSocket(); err != nil {
			return err
		}
		defer sock.Close()
	}
	pidFile := filepath.Join(c.bundle, p.id+".pid")
	defer os.Remove(pidFile)
	opts := &runc.ExecOpts{PidFile: pidFile, Detach: true}
	if err := setRuncIO(p, &opts.IO); err != nil {
		return err
	}
	if sock != nil {
		opts.ConsoleSocket = sock
	}
	if err := c.runc.Exec(ctx, c.id, *p.spec, opts); err != nil {
		return runtimeError(c.runc, err, "runc exec")
	}
	pid, err := runc.ReadPidFile(pidFile)
	if err != nil {
		return fmt.Errorf("exec %q: %w", p.id, err)
	}
	p.setPid(pid)
	return s.connectIO(p, sock)
}
