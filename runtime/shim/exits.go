package shim

import (
	"context"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

// Exit handling. The shim is a subreaper: every process of its containers
// whose parent dies is reparented to it and reaped by containerd's reaper,
// which hands the exits to s.ec. A process can exit before the call that
// started it has learnt its pid (runc exits first and the process is
// reaped at once), so starts watch the exits until the pid is registered
// in s.running (see watchExits and started).
//
// Two invariants containerd relies on: a process's TaskExit follows its
// TaskStart/TaskExecStarted, and the init's TaskExit is the container's
// last.

// exitWatch collects the exits seen while a process is being started.
type exitWatch struct{ exits []runc.Exit }

func (s *service) processExits() {
	for e := range s.ec {
		s.lifecycleMu.Lock()
		for w := range s.watches {
			w.exits = append(w.exits, e)
		}
		p := s.running[e.Pid]
		delete(s.running, e.Pid)
		s.lifecycleMu.Unlock()
		if p != nil {
			s.handleExit(p, e)
		}
	}
}

// watchExits starts a watch; for an init being started again (Start after
// Create) it also unregisters the pid, so that an exit during the start is
// handled after the start's event.
func (s *service) watchExits(restart *process) *exitWatch {
	w := &exitWatch{}
	s.lifecycleMu.Lock()
	defer s.lifecycleMu.Unlock()
	s.watches[w] = struct{}{}
	if restart != nil {
		if pid := restart.Pid(); pid > 0 && s.running[pid] == restart {
			delete(s.running, pid)
		}
	}
	return w
}

// started ends the watch: p runs as p.Pid(), or has already exited, in
// which case the exit is handled now. Call it after publishing the start
// event; a failed start calls it too (with the pid, if any, so that a
// process that did get a pid is not forgotten).
func (s *service) started(p *process, w *exitWatch) {
	pid := p.Pid()
	s.lifecycleMu.Lock()
	delete(s.watches, w)
	var exit *runc.Exit
	for i := range w.exits {
		if pid > 0 && w.exits[i].Pid == pid {
			exit = &w.exits[i]
		}
	}
	if exit == nil && pid > 0 && !p.hasExited() {
		s.running[pid] = p
	}
	s.lifecycleMu.Unlock()
	if exit != nil {
		s.handleExit(p, *exit)
	}
}

// unwatch drops a watch whose start failed before any pid existed.
func (s *service) unwatch(w *exitWatch) {
	s.lifecycleMu.Lock()
	delete(s.watches, w)
	s.lifecycleMu.Unlock()
}

func (s *service) handleExit(p *process, e runc.Exit) {
	if p.isInit() {
		s.handleInitExit(p, e)
		return
	}
	s.publishExit(p, e)
	c := p.c
	s.lifecycleMu.Lock()
	c.runningExecs--
	var initExit *runc.Exit
	if c.runningExecs <= 0 && c.initExit != nil {
		initExit, c.initExit = c.initExit, nil
	}
	s.lifecycleMu.Unlock()
	if initExit != nil {
		s.publishExit(c.init, *initExit)
	}
}

// handleInitExit publishes the init's exit after those of the running
// execs. Without a pid namespace of its own the container's other
// processes survive the init; they are killed, as runc's shim does.
func (s *service) handleInitExit(p *process, e runc.Exit) {
	c := p.c
	if !c.ownPidNS {
		go func() {
			if err := c.runc.Kill(context.Background(), c.id, int(unix.SIGKILL), &runc.KillOpts{All: true}); err != nil {
				log.G(s.ctx).WithError(err).WithField("id", c.id).Debug("kill the processes left after the init's exit")
			}
		}()
	}
	s.lifecycleMu.Lock()
	c.initExited = true
	if c.runningExecs > 0 {
		c.initExit = &e
		s.lifecycleMu.Unlock()
		return
	}
	s.lifecycleMu.Unlock()
	s.publishExit(p, e)
}

func (s *service) publishExit(p *process, e runc.Exit) {
	p.setExited(e.Status, e.Timestamp)
	id := p.id
	if id == "" {
		id = p.c.id
	}
	s.send(&eventstypes.TaskExit{
		ContainerID: p.c.id,
		ID:          id,
		Pid:         uint32(e.Pid),
		ExitStatus:  uint32(e.Status),
		ExitedAt:    protobuf.ToTimestamp(e.Timestamp),
	})
}

// execStarting counts an exec as running before runc starts it, so that
// an init exit meanwhile waits for it; it fails once the init has exited.
func (s *service) execStarting(c *container) bool {
	s.lifecycleMu.Lock()
	defer s.lifecycleMu.Unlock()
	if c.initExited {
		return false
	}
	c.runningExecs++
	return true
}

// execFailed undoes execStarting for an exec that never ran.
func (s *service) execFailed(c *container) {
	s.lifecycleMu.Lock()
	c.runningExecs--
	var initExit *runc.Exit
	if c.runningExecs <= 0 && c.initExit != nil {
		initExit, c.initExit = c.initExit, nil
	}
	s.lifecycleMu.Unlock()
	if initExit != nil {
		s.publishExit(c.init, *initExit)
	}
}
