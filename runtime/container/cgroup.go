package container

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"github.com/ckpt-dev/ckpt/runtime/plan"
	"github.com/opencontainers/cgroups"
	// Registers the device rules setter runc registers too; without it the
	// manager cannot apply the spec's device cgroup rules.
	_ "github.com/opencontainers/cgroups/devices"
	"github.com/opencontainers/cgroups/manager"
	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"
)

// newCgroup returns the manager of the container's cgroup and refuses a
// cgroup that already has processes (another container's).
func newCgroup(cfg *configs.Config) (cgroups.Manager, error) {
	cg, err := manager.New(cfg.Cgroups)
	if err != nil {
		return nil, fmt.Errorf("cgroup manager: %w", err)
	}
	if cg.Exists() {
		pids, err := cg.GetAllPids()
		if err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.ENODEV) {
			return nil, fmt.Errorf("read the cgroup's processes: %w", err)
		}
		if len(pids) > 0 {
			return nil, fmt.Errorf("the container's cgroup is not empty: %d process(es) in it", len(pids))
		}
	}
	return cg, nil
}

// enterCgroup puts criu into the container's cgroup with its resources
// set, and returns the cg_root entries that re-root the image's cgroups
// there. CRIU's restored tasks are born in criu's cgroup.
func enterCgroup(cg cgroups.Manager, cfg *configs.Config, criuPid int) ([]*rpc.CgroupRoot, error) {
	if err := cg.Apply(criuPid); err != nil {
		return nil, fmt.Errorf("create the container's cgroup: %w", err)
	}
	if cfg.Cgroups.Resources != nil {
		if err := cg.Set(cfg.Cgroups.Resources); err != nil {
			return nil, fmt.Errorf("set the container's cgroup resources: %w", err)
		}
	}
	paths, err := cgroups.ParseCgroupFile(fmt.Sprintf("/proc/%d/cgroup", criuPid))
	if err != nil {
		return nil, err
	}
	ctrls := make([]string, 0, len(paths))
	for c := range paths {
		ctrls = append(ctrls, c)
	}
	sort.Strings(ctrls)
	roots := make([]*rpc.CgroupRoot, 0, len(ctrls))
	for _, c := range ctrls {
		roots = append(roots, &rpc.CgroupRoot{Ctrl: ptr(c), Path: ptr(paths[c])})
	}
	return roots, nil
}

// cgroupBinds are the new sources of a v1 cgroup mount's bind mounts: the
// container's cgroup in each hierarchy.
func cgroupBinds(cfg *configs.Config, cg cgroups.Manager) ([]plan.Bind, error) {
	if cgroupV2() || cfg.Namespaces.Contains(configs.NEWCGROUP) || !hasCgroupMount(cfg) {
		return nil, nil
	}
	mounts, err := cgroups.GetCgroupMounts(false)
	if err != nil {
		return nil, err
	}
	paths := cg.GetPaths()
	var binds []plan.Bind
	for _, m := range cfg.Mounts {
		if m.Device != "cgroup" {
			continue
		}
		for _, mm := range mounts {
			src := ""
			for _, s := range mm.Subsystems {
				// Named hierarchies are "name=systemd" in the paths,
				// "systemd" in the mount's subsystems.
				if p, ok := paths[s]; ok {
					src = p
				} else if p, ok := paths[cgroups.CgroupNamePrefix+s]; ok {
					src = p
				}
				if src != "" {
					break
				}
			}
			if src == "" {
				return nil, fmt.Errorf("the container has no cgroup in the %s hierarchy", mm.Mountpoint)
			}
			binds = append(binds, plan.Bind{Dest: path.Join(m.Destination, filepath.Base(mm.Mountpoint)), Source: src})
		}
	}
	return binds, nil
}

// destroyCgroup kills whatever is left in the cgroup (a half-restored
// tree) and removes it.
func destroyCgroup(cg cgroups.Manager) error {
	if cg == nil {
		return nil
	}
	// A frozen task does not die of SIGKILL until thawed.
	cg.Freeze(cgroups.Thawed)
	deadline := time.Now().Add(5 * time.Second)
	for {
		pids, err := cg.GetAllPids()
		if err != nil || len(pids) == 0 {
			break
		}
		for _, p := range pids {
			unix.Kill(p, unix.SIGKILL)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v survive in the container's cgroup", pids)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return cg.Destroy()
}

func ptr[T any](v T) *T { return &v }
