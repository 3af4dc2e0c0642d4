// Package shim is ckpt's containerd task service (task API v3): containers
// run on runc through go-runc, exits come from containerd's reaper, and
// checkpoint/restore goes to an Engine (runtime/container) that drives CRIU.
// A restore is split across Create (returns at CRIU's setup-namespaces, so
// the task has a real pid; CRIU is then held at post-setup-namespaces) and
// Start (CRIU completes).
package shim

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/containerd/v2/core/runtime"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oom"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	cdshim "github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/containerd/v2/pkg/shutdown"
	"github.com/containerd/containerd/v2/pkg/sys/reaper"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/types/known/emptypb"
)

var empty = &emptypb.Empty{}

// service implements containerd's TTRPCTaskService.
type service struct {
	ctx    context.Context
	ns     string
	engine Engine
	sd     shutdown.Service

	evmu   sync.Mutex
	events chan any // nil once the shim shuts down

	mu         sync.Mutex
	containers map[string]*container
	// creating holds the ids of Creates under way. The shim of a pod
	// serves several containers: Shutdown after one's Delete must not
	// end it under another's Create, and two Creates of one id must not
	// both run.
	creating map[string]struct{}

	ec          chan runc.Exit
	lifecycleMu sync.Mutex
	running     map[int]*process
	watches     map[*exitWatch]struct{}

	oom oom.Watcher // nil: no OOM events here (oom.go)
}

var _ taskAPI.TTRPCTaskService = (*service)(nil)

// NewTaskService returns the task service. engine may be nil: checkpoint
// and restore then fail with ErrNotImplemented.
func NewTaskService(ctx context.Context, publisher events.Publisher, sd shutdown.Service, engine Engine) (taskAPI.TTRPCTaskService, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	// go-runc must wait for runc through the reaper: the shim reaps every
	// child, and a plain cmd.Wait would lose the race.
	runc.Monitor = reaper.Default
	s := &service{
		ctx: ctx, ns: ns, engine: engine, sd: sd,
		events:     make(chan any, 128),
		containers: make(map[string]*container),
		creating:   make(map[string]struct{}),
		ec:         reaper.Default.Subscribe(),
		running:    make(map[int]*process),
		watches:    make(map[*exitWatch]struct{}),
	}
	s.oom = newOOMWatcher(ctx, s)
	forwarded := make(chan struct{})
	go s.processExits()
	go func() {
		s.forward(ctx, publisher, s.events)
		close(forwarded)
	}()
	sd.RegisterCallback(func(ctx context.Context) error {
		s.evmu.Lock()
		if s.events != nil {
			close(s.events)
			s.events = nil
		}
		s.evmu.Unlock()
		// The last events (TaskDelete) must leave before the shim exits.
		select {
		case <-forwarded:
		case <-ctx.Done():
		case <-time.After(2 * time.Second):
		}
		return nil
	})
	return s, nil
}

// RegisterTTRPC is shim.TTRPCService.
func (s *service) RegisterTTRPC(server *ttrpc.Server) error {
	taskAPI.RegisterTTRPCTaskService(server, s)
	return nil
}

// send queues an event; one goroutine publishes them in order.
func (s *service) send(evt any) {
	s.evmu.Lock()
	defer s.evmu.Unlock()
	if s.events != nil {
		s.events <- evt
	}
}

func (s *service) forward(ctx context.Context, publisher events.Publisher, evs <-chan any) {
	ctx = namespaces.WithNamespace(context.WithoutCancel(ctx), s.ns)
	for e := range evs {
		if err := publisher.Publish(ctx, runtime.GetTopic(e), e); err != nil {
			log.G(ctx).WithError(err).Error("post event")
		}
	}
	if c, ok := publisher.(cdshim.Publisher); ok {
		c.Close()
	}
}

// reserve registers a Create of id; it fails if id exists or is being
// created. release ends the reservation, adding c if the Create made it.
func (s *service) reserve(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.containers[id]; ok {
		return fmt.Errorf("container %q: %w", id, errdefs.ErrAlreadyExists)
	}
	if _, ok := s.creating[id]; ok {
		return fmt.Errorf("container %q is being created: %w", id, errdefs.ErrAlreadyExists)
	}
	s.creating[id] = struct{}{}
	return nil
}

func (s *service) release(id string, c *container) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.creating, id)
	if c != nil {
		s.containers[id] = c
	}
}

func (s *service) container(id string) (*container, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.containers[id]
	if c == nil {
		return nil, fmt.Errorf("container %q: %w", id, errdefs.ErrNotFound)
	}
	return c, nil
}

func (s *service) process(id, execID string) (*container, *process, error) {
	c, err := s.container(id)
	if err != nil {
		return nil, nil, err
	}
	p := c.process(execID)
	if p == nil {
		return nil, nil, fmt.Errorf("process %q of container %q: %w", execID, id, errdefs.ErrNotFound)
	}
	return c, p, nil
}

// toGRPC classifies errors for containerd (errdefs over ttrpc).
func toGRPC(err error) error {
	if err == nil {
		return nil
	}
	return errgrpc.ToGRPC(err)
}

// State of a process.
func (s *service) State(ctx context.Context, r *taskAPI.StateRequest) (*taskAPI.StateResponse, error) {
	c, p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, toGRPC(err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	id := p.id
	if id == "" {
		id = c.id
	}
	return &taskAPI.StateResponse{
		ID:         id,
		ExecID:     p.id,
		Bundle:     c.bundle,
		Pid:        uint32(p.pid),
		Status:     p.status,
		Stdin:      p.stdio.Stdin,
		Stdout:     p.stdio.Stdout,
		Stderr:     p.stdio.Stderr,
		Terminal:   p.stdio.Terminal,
		ExitStatus: uint32(p.exitStatus),
		ExitedAt:   protobuf.ToTimestamp(p.exitedAt),
	}, nil
}

// Wait for a process's exit (and its output).
func (s *service) Wait(ctx context.Context, r *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	_, p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, toGRPC(err)
	}
	if err := p.wait(ctx); err != nil {
		return nil, toGRPC(err)
	}
	status, at := p.exit()
	return &taskAPI.WaitResponse{ExitStatus: uint32(status), ExitedAt: protobuf.ToTimestamp(at)}, nil
}

// Connect tells containerd the shim's and the task's pids.
func (s *service) Connect(ctx context.Context, r *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	var pid int
	if c, err := s.container(r.ID); err == nil {
		pid = c.init.Pid()
	}
	return &taskAPI.ConnectResponse{ShimPid: uint32(os.Getpid()), TaskPid: uint32(pid)}, nil
}

// Shutdown ends the shim once it serves no container and creates none.
// containerd asks after each Delete; the shim of a pod goes with its last
// container. A Create that fails afterwards is followed by containerd's
// Delete and Shutdown again.
func (s *service) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*emptypb.Empty, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.containers) > 0 || len(s.creating) > 0 {
		log.G(ctx).WithFields(log.Fields{"containers": len(s.containers), "creating": len(s.creating)}).Debug("shutdown: the shim serves other containers")
		return empty, nil
	}
	s.sd.Shutdown()
	return empty, nil
}

// Pause freezes the container.
func (s *service) Pause(ctx context.Context, r *taskAPI.PauseRequest) (*emptypb.Empty, error) {
	c, err := s.container(r.ID)
	if err != nil {
		return nil, toGRPC(err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.init.Status(); st != task.Status_RUNNING {
		return nil, toGRPC(fmt.Errorf("pause: container %q is %s, not running: %w", c.id, st, errdefs.ErrFailedPrecondition))
	}
	if err := s.freeze(ctx, c, true); err != nil {
		return nil, toGRPC(err)
	}
	c.init.setStatus(task.Status_PAUSED)
	s.send(&eventstypes.TaskPaused{ContainerID: c.id})
	return empty, nil
}

// Resume thaws the container.
func (s *service) Resume(ctx context.Context, r *taskAPI.ResumeRequest) (*emptypb.Empty, error) {
	c, err := s.container(r.ID)
	if err != nil {
		return nil, toGRPC(err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.init.Status(); st != task.Status_PAUSED {
		return nil, toGRPC(fmt.Errorf("resume: container %q is %s, not paused: %w", c.id, st, errdefs.ErrFailedPrecondition))
	}
	if err := s.freeze(ctx, c, false); err != nil {
		return nil, toGRPC(err)
	}
	c.init.setStatus(task.Status_RUNNING)
	s.send(&eventstypes.TaskResumed{ContainerID: c.id})
	return empty, nil
}

// freeze pauses (or resumes) the container through the engine, in this
// process, and through runc where the engine cannot (none, or a state
// its runc library does not read).
func (s *service) freeze(ctx context.Context, c *container, frozen bool) error {
	if s.engine != nil {
		f := s.engine.Resume
		if frozen {
			f = s.engine.Pause
		}
		err := f(ctx, c.runc.Root, c.id)
		if err == nil {
			return nil
		}
		log.G(ctx).WithError(err).Debug("runc's library could not freeze or thaw the container; running runc")
	}
	if frozen {
		if err := c.runc.Pause(ctx, c.id); err != nil {
			return runtimeError(c.runc, err, "runc pause")
		}
		return nil
	}
	if err := c.runc.Resume(ctx, c.id); err != nil {
		return runtimeError(c.runc, err, "runc resume")
	}
	return nil
}
