package shim

import (
	"context"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	cgroupsv2 "github.com/containerd/cgroups/v3/cgroup2"
	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/containerd/v2/pkg/oom"
	oomv1 "github.com/containerd/containerd/v2/pkg/oom/v1"
	oomv2 "github.com/containerd/containerd/v2/pkg/oom/v2"
	"github.com/containerd/log"
)

// A container whose cgroup's OOM killer fires gets a TaskOOM event, as on
// containerd's runc shim: clients (Docker's OOMKilled, the CRI's reason
// "OOMKilled") read it. containerd's own watchers do the watching: an
// eventfd on memory.oom_control on cgroup v1, memory.events on v2.

// newOOMWatcher starts the watcher for this host's cgroup mode; nil (and
// a warning) when there is none to be had.
func newOOMWatcher(ctx context.Context, s *service) oom.Watcher {
	var (
		w   oom.Watcher
		err error
	)
	if cgroups.Mode() == cgroups.Unified {
		w, err = oomv2.New(sendPublisher{s})
	} else {
		w, err = oomv1.New(sendPublisher{s})
	}
	if err != nil {
		log.G(ctx).WithError(err).Warn("no OOM events: the watcher did not start")
		return nil
	}
	go w.Run(ctx)
	return w
}

// watchOOM adds a started init's cgroup to the watcher. A cgroup that
// cannot be watched costs the event, not the task.
func (s *service) watchOOM(ctx context.Context, c *container, pid int) {
	if s.oom == nil || pid <= 0 {
		return
	}
	var (
		cg  any
		err error
	)
	if cgroups.Mode() == cgroups.Unified {
		var path string
		if path, err = cgroupsv2.PidGroupPath(pid); err == nil {
			cg, err = cgroupsv2.Load(path)
		}
	} else {
		cg, err = cgroup1.Load(cgroup1.PidPath(pid), cgroup1.WithHierarchy(cgroup1.Default))
	}
	if err == nil {
		err = s.oom.Add(c.id, cg)
	}
	if err != nil {
		log.G(ctx).WithError(err).WithField("id", c.id).Warn("no OOM events for this task")
	}
}

// sendPublisher publishes through the service's event queue, in order
// with the task's other events.
type sendPublisher struct{ s *service }

func (p sendPublisher) Publish(_ context.Context, _ string, event events.Event) error {
	p.s.send(event)
	return nil
}
