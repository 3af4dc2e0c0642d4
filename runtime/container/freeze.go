package container

import (
	"context"
	"fmt"

	"github.com/containerd/log"
	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/cgroups/manager"
	"github.com/opencontainers/runc/libcontainer"
)

// CRIU freezes a running container's cgroup itself, but on cgroup v1 it
// checks the freezer in 100 ms steps, so every checkpoint of a running
// container paid 100 ms just to freeze it. runc's freezer (the one behind
// `runc pause`) polls without sleeping. A container that is already
// frozen (containerd pauses before it checkpoints) is left as it is.

// freezeFirst freezes the container's cgroup unless it is frozen already,
// and returns what undoes it: CRIU leaves the freezer as it found it, so a
// container ckpt froze must be thawed after a dump that left it running,
// or one that failed.
func freezeFirst(ctx context.Context, st *libcontainer.State) (thaw func(), err error) {
	noop := func() {}
	if st.Config.Cgroups == nil || len(st.CgroupPaths) == 0 {
		return noop, nil
	}
	m, err := manager.NewWithPaths(st.Config.Cgroups, st.CgroupPaths)
	if err != nil {
		return noop, fmt.Errorf("the container's cgroup: %w", err)
	}
	state, err := m.GetFreezerState()
	if err != nil {
		return noop, fmt.Errorf("the container's freezer: %w", err)
	}
	if state != cgroups.Thawed {
		return noop, nil
	}
	if err := m.Freeze(cgroups.Frozen); err != nil {
		// Thaw what may be half frozen; CRIU can still freeze it itself.
		m.Freeze(cgroups.Thawed)
		log.G(ctx).WithError(err).Warn("cannot freeze the container first; CRIU freezes it")
		return noop, nil
	}
	return func() {
		if err := m.Freeze(cgroups.Thawed); err != nil && m.Exists() {
			log.G(ctx).WithError(err).Warn("thaw the container after its checkpoint")
		}
	}, nil
}

// Pause freezes the container runc runs under root as id, as `runc pause`
// does, with runc's own library in this process: an exec of runc costs
// more than the freeze (containerd pauses before every checkpoint).
func Pause(root, id string) error {
	c, err := libcontainer.Load(root, id)
	if err != nil {
		return err
	}
	return c.Pause()
}

// Resume thaws what Pause froze, as `runc resume` does.
func Resume(root, id string) error {
	c, err := libcontainer.Load(root, id)
	if err != nil {
		return err
	}
	return c.Resume()
}
