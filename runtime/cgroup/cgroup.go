package cgroup

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"github.com/ckpt-dev/ckpt/runtime/cgroupfs"
	"github.com/ckpt-dev/ckpt/runtime/plan"
	"github.com/moby/sys/mountinfo"
	"github.com/opencontainers/cgroups"
	// Registers the device rules setter runc registers too; without it the
	// manager cannot apply the spec's device cgroup rules.
	_ "github.com/opencontainers/cgroups/devices"
	"github.com/opencontainers/cgroups/manager"
	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"
)

// New returns the manager of the container's cgroup and refuses a
// cgroup that already has processes (another container's).
func New(cfg *configs.Config) (cgroups.Manager, error) {
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

// CRIU moves every restored task into the image's cgroups, re-rooted at
// cg_root, in every cgroups mode but ignore. There the cgroup only has to
// exist with its resources set: criu itself stays out (except under the
// systemd driver, see CRIUJoins). Moving a task
// between cgroups waits out an RCU grace period (5-15 ms here) when none
// passed lately, and CRIU's own move would pay it again. In ignore mode
// CRIU moves nothing and the restored tasks stay where criu is, so criu
// is put in the cgroup first (Join).

// CRIUJoins reports whether criu must be in the container's cgroup
// before it restores: in cgroups mode ignore (CRIU moves no task), and under
// the systemd driver, whose cgroup is a scope unit that systemd starts only
// with a process in it.
func CRIUJoins(cfg *configs.Config, cgroupsMode string) bool {
	return cgroupsMode == "ignore" || (cfg.Cgroups != nil && cfg.Cgroups.Systemd)
}

// Setup creates the container's cgroup on a goroutine while the
// restore is prepared and criu starts, then pays the cgroup migration
// lock's grace period ahead of CRIU's move of the restored task
// (runtime/cgroupfs). In that order: the lock's wait holds the cgroup
// mutex, which creating a cgroup needs too.
type Setup struct {
	done  chan struct{}
	roots []*rpc.CgroupRoot
	err   error
}

func StartSetup(cg cgroups.Manager, cfg *configs.Config) *Setup {
	s := &Setup{done: make(chan struct{})}
	go func() {
		s.roots, s.err = createCgroup(cg, cfg)
		close(s.done)
		if s.err == nil {
			cgroupfs.WarmMigration()
		}
	}()
	return s
}

// Wait returns the cg_root entries once the cgroup exists.
func (s *Setup) Wait() ([]*rpc.CgroupRoot, error) {
	<-s.done
	return s.roots, s.err
}

// createCgroup creates the container's cgroup with its resources set, and
// returns the cg_root entries that re-root the image's cgroups there.
func createCgroup(cg cgroups.Manager, cfg *configs.Config) ([]*rpc.CgroupRoot, error) {
	if err := applyCgroup(cg, cfg, -1); err != nil {
		return nil, err
	}
	// criu starts in this process's cgroups: where the container has none
	// of its own (a hybrid host's v2 under the cgroupfs driver), its
	// tasks stay in ours, as if criu had joined.
	paths, err := cgroups.ParseCgroupFile("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	mounts, err := mountinfo.GetMounts(mountinfo.FSTypeFilter("cgroup", "cgroup2"))
	if err != nil {
		return nil, err
	}
	for ctrl, abs := range cg.GetPaths() {
		if _, ok := paths[ctrl]; !ok {
			continue
		}
		rel, err := cgroupPathOf(abs, ctrl, mounts)
		if err != nil {
			return nil, err
		}
		paths[ctrl] = rel
	}
	return cgRoots(paths), nil
}

// Join puts criu into the container's cgroup with its resources set
// and returns the cg_root entries, as criu's own cgroups.
func Join(cg cgroups.Manager, cfg *configs.Config, criuPid int) ([]*rpc.CgroupRoot, error) {
	if err := applyCgroup(cg, cfg, criuPid); err != nil {
		return nil, err
	}
	paths, err := cgroups.ParseCgroupFile(fmt.Sprintf("/proc/%d/cgroup", criuPid))
	if err != nil {
		return nil, err
	}
	return cgRoots(paths), nil
}

func applyCgroup(cg cgroups.Manager, cfg *configs.Config, pid int) error {
	if err := cg.Apply(pid); err != nil {
		return fmt.Errorf("create the container's cgroup: %w", err)
	}
	if cfg.Cgroups.Resources != nil {
		if err := cg.Set(cfg.Cgroups.Resources); err != nil {
			return fmt.Errorf("set the container's cgroup resources: %w", err)
		}
	}
	return nil
}

// cgroupPathOf turns a cgroup directory into its path in the hierarchy of
// controller ctrl ("" for v2), as /proc/<pid>/cgroup shows it.
func cgroupPathOf(dir, ctrl string, mounts []*mountinfo.Info) (string, error) {
	var best *mountinfo.Info
	for _, m := range mounts {
		if dir != m.Mountpoint && !strings.HasPrefix(dir, m.Mountpoint+"/") {
			continue
		}
		if !cgroupfs.HoldsController(m, ctrl) || (best != nil && len(best.Mountpoint) >= len(m.Mountpoint)) {
			continue
		}
		best = m
	}
	if best == nil {
		return "", fmt.Errorf("cgroup %s: no %q hierarchy mounted above it", dir, ctrl)
	}
	return path.Join("/", best.Root, strings.TrimPrefix(dir, best.Mountpoint)), nil
}

// cgRoots are cg_root entries for controller -> path, sorted.
func cgRoots(paths map[string]string) []*rpc.CgroupRoot {
	ctrls := make([]string, 0, len(paths))
	for c := range paths {
		ctrls = append(ctrls, c)
	}
	sort.Strings(ctrls)
	roots := make([]*rpc.CgroupRoot, 0, len(ctrls))
	for _, c := range ctrls {
		roots = append(roots, &rpc.CgroupRoot{Ctrl: ptr(c), Path: ptr(paths[c])})
	}
	return roots
}

// Binds are the new sources of a v1 cgroup mount's bind mounts: the
// container's cgroup in each hierarchy.
func Binds(cfg *configs.Config, cg cgroups.Manager) ([]plan.Bind, error) {
	if V2() || cfg.Namespaces.Contains(configs.NEWCGROUP) || !HasMount(cfg) {
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

// Destroy kills whatever is left in the cgroup (a half-restored
// tree) and removes it.
func Destroy(cg cgroups.Manager) error {
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
