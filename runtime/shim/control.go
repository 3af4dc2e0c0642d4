package shim

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/ckpt-dev/ckpt/runtime/policy"
	"github.com/containerd/cgroups/v3"
	v1stats "github.com/containerd/cgroups/v3/cgroup1/stats"
	cgroupsv2 "github.com/containerd/cgroups/v3/cgroup2"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/typeurl/v2"
	"github.com/creack/pty"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/emptypb"
)

// ResizePty sets a terminal process's window size.
func (s *service) ResizePty(ctx context.Context, r *taskAPI.ResizePtyRequest) (*emptypb.Empty, error) {
	_, p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, toGRPC(err)
	}
	if !p.stdio.Terminal {
		return nil, toGRPC(fmt.Errorf("resize: process has no terminal: %w", errdefs.ErrFailedPrecondition))
	}
	if err := p.resize(pty.Winsize{Rows: uint16(r.Height), Cols: uint16(r.Width)}); err != nil {
		return nil, toGRPC(fmt.Errorf("resize: %w", err))
	}
	return empty, nil
}

// CloseIO closes a process's stdin (once the client closes its end too).
func (s *service) CloseIO(ctx context.Context, r *taskAPI.CloseIORequest) (*emptypb.Empty, error) {
	_, p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, toGRPC(err)
	}
	if r.Stdin && p.io != nil {
		p.io.closeStdin()
	}
	return empty, nil
}

// Pids lists the container's processes; execs carry their exec id.
func (s *service) Pids(ctx context.Context, r *taskAPI.PidsRequest) (*taskAPI.PidsResponse, error) {
	c, err := s.container(r.ID)
	if err != nil {
		return nil, toGRPC(err)
	}
	if pid, held := c.heldPid(); held {
		// runc knows no container before CRIU's post-restore. containerd
		// asks for the pids as it loads a shim after a restart, and kills
		// a shim whose task has none as leaked.
		return &taskAPI.PidsResponse{Processes: []*task.ProcessInfo{{Pid: uint32(pid)}}}, nil
	}
	pids, err := c.runc.Ps(ctx, c.id)
	if err != nil {
		return nil, toGRPC(runtimeError(c.runc, err, "runc ps"))
	}
	execs := map[int]string{}
	c.emu.Lock()
	for id, p := range c.execs {
		if pid := p.Pid(); pid > 0 {
			execs[pid] = id
		}
	}
	c.emu.Unlock()
	resp := &taskAPI.PidsResponse{}
	for _, pid := range pids {
		info := &task.ProcessInfo{Pid: uint32(pid)}
		if id, ok := execs[pid]; ok {
			a, err := typeurl.MarshalAnyToProto(&options.ProcessDetails{ExecID: id})
			if err != nil {
				return nil, toGRPC(err)
			}
			info.Info = a
		}
		resp.Processes = append(resp.Processes, info)
	}
	return resp, nil
}

// Update changes the container's resources.
func (s *service) Update(ctx context.Context, r *taskAPI.UpdateTaskRequest) (*emptypb.Empty, error) {
	c, err := s.container(r.ID)
	if err != nil {
		return nil, toGRPC(err)
	}
	u, err := policy.ParseUpdate(r.Annotations)
	if err != nil {
		return nil, toGRPC(fmt.Errorf("update: %w", err))
	}
	if u.Lazy != nil || u.Abort {
		// ckpt's own update (transfer.go): an Update carries either those
		// annotations or resources.
		return empty, toGRPC(s.updateTransfer(ctx, c, u))
	}
	var res specs.LinuxResources
	if err := json.Unmarshal(r.Resources.GetValue(), &res); err != nil {
		return nil, toGRPC(fmt.Errorf("update: resources: %w: %w", err, errdefs.ErrInvalidArgument))
	}
	if err := c.runc.Update(ctx, c.id, &res); err != nil {
		return nil, toGRPC(runtimeError(c.runc, err, "runc update"))
	}
	return empty, nil
}

// Stats returns the cgroup metrics of the container's init.
func (s *service) Stats(ctx context.Context, r *taskAPI.StatsRequest) (*taskAPI.StatsResponse, error) {
	c, err := s.container(r.ID)
	if err != nil {
		return nil, toGRPC(err)
	}
	pid := c.init.Pid()
	if pid <= 0 || c.init.hasExited() {
		return nil, toGRPC(fmt.Errorf("stats: task %q is not running: %w", c.id, errdefs.ErrNotFound))
	}
	var metrics any
	if cgroups.Mode() == cgroups.Unified {
		path, err := cgroupsv2.PidGroupPath(pid)
		if err != nil {
			return nil, toGRPC(fmt.Errorf("stats: %w", err))
		}
		cg, err := cgroupsv2.Load(path)
		if err != nil {
			return nil, toGRPC(fmt.Errorf("stats: %w", err))
		}
		if metrics, err = cg.Stat(); err != nil {
			return nil, toGRPC(fmt.Errorf("stats: %w", err))
		}
	} else {
		// containerd's cgroup1 package needs a module this one does not
		// carry; runc's own stats give the essentials.
		st, err := c.runc.Stats(ctx, c.id)
		if err != nil {
			return nil, toGRPC(runtimeError(c.runc, err, "runc events --stats"))
		}
		metrics = v1Metrics(st)
	}
	a, err := typeurl.MarshalAnyToProto(metrics)
	if err != nil {
		return nil, toGRPC(err)
	}
	return &taskAPI.StatsResponse{Stats: a}, nil
}

// v1Metrics converts runc's stats to containerd's cgroup v1 metrics type,
// which clients (ctr, nerdctl, Docker) decode.
func v1Metrics(st *runc.Stats) *v1stats.Metrics {
	return &v1stats.Metrics{
		Pids: &v1stats.PidsStat{Current: st.Pids.Current, Limit: st.Pids.Limit},
		CPU: &v1stats.CPUStat{
			Usage: &v1stats.CPUUsage{
				Total: st.Cpu.Usage.Total, Kernel: st.Cpu.Usage.Kernel, User: st.Cpu.Usage.User, PerCPU: st.Cpu.Usage.Percpu,
			},
			Throttling: &v1stats.Throttle{
				Periods: st.Cpu.Throttling.Periods, ThrottledPeriods: st.Cpu.Throttling.ThrottledPeriods,
				ThrottledTime: st.Cpu.Throttling.ThrottledTime,
			},
		},
		Memory: &v1stats.MemoryStat{
			Cache: st.Memory.Cache,
			Usage: &v1stats.MemoryEntry{
				Limit: st.Memory.Usage.Limit, Usage: st.Memory.Usage.Usage, Max: st.Memory.Usage.Max, Failcnt: st.Memory.Usage.Failcnt,
			},
			Swap: &v1stats.MemoryEntry{
				Limit: st.Memory.Swap.Limit, Usage: st.Memory.Swap.Usage, Max: st.Memory.Swap.Max, Failcnt: st.Memory.Swap.Failcnt,
			},
			RSS: st.Memory.Raw["rss"],
		},
	}
}

// heldPid is the root task of a restore held between Create and Start:
// until Start only that task exists.
func (c *container) heldPid() (int, bool) {
	c.emu.Lock()
	defer c.emu.Unlock()
	if c.restore == nil {
		return 0, false
	}
	return c.restore.Pid(), true
}
