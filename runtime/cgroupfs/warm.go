// Package cgroupfs is what ckpt reads and does through the host's cgroup
// mounts, apart from a container's own cgroup (runc's cgroups library
// manages that).
package cgroupfs

import (
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/moby/sys/mountinfo"
	"github.com/opencontainers/cgroups"
)

// Every move of a task between cgroups, in any hierarchy, takes the
// kernel's global cgroup_threadgroup_rwsem for writing. Entering it waits
// out an RCU grace period when no writer came lately (3-16 ms here), and
// leaving it keeps it cheap for the next writer for about one more grace
// period (tens of ms). The first move of a restored task by CRIU, or of
// a new init by runc, so pays a grace period on an idle host, while the
// container waits. ckpt pays it ahead instead, on a goroutine: when the
// shim starts, and again while it prepares a restore or while runc starts
// up. It moves its own process into the cgroup it is already in, which
// changes nothing but takes the lock. The move that matters, a few ms
// later, then finds it warm (0.1-0.2 ms). The wait holds the cgroup
// mutex, which every mkdir of a cgroup needs too: a caller that creates
// cgroups itself warms again after.
// Where a hierarchy is mounted with favordynmods the lock never waits and
// this costs a write. It is an optimization only: where the write fails
// (a read-only cgroupfs), the move waits as before.

// WarmMigration takes the cgroup migration lock once, by moving this
// process into its own cgroup. A caller about to have runc create a
// container (which moves the new init into its cgroup) gains the same.
func WarmMigration() {
	procs, err := ownCgroupProcs()
	if err != nil {
		return
	}
	f, err := os.OpenFile(procs, os.O_WRONLY, 0)
	if err != nil {
		return
	}
	defer f.Close()
	f.WriteString(strconv.Itoa(os.Getpid()))
}

// ownCgroupProcs is the cgroup.procs file of this process's cgroup in one
// hierarchy mounted here.
func ownCgroupProcs() (string, error) {
	paths, err := cgroups.ParseCgroupFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	mounts, err := mountinfo.GetMounts(mountinfo.FSTypeFilter("cgroup", "cgroup2"))
	if err != nil {
		return "", err
	}
	return cgroupProcsIn(paths, mounts)
}

// cgroupProcsIn finds, for a process's cgroups (controller -> path, as in
// /proc/PID/cgroup), the cgroup.procs file of one of them under a mount
// whose root holds it.
func cgroupProcsIn(paths map[string]string, mounts []*mountinfo.Info) (string, error) {
	for _, m := range mounts {
		for ctrl, p := range paths {
			// A path out of our cgroup namespace's root is not ours to
			// follow: cleaned, it would name another cgroup.
			if !HoldsController(m, ctrl) || strings.Contains(p, "/..") {
				continue
			}
			rel, ok := strings.CutPrefix(p, m.Root)
			if !ok || (rel != "" && !strings.HasPrefix(rel, "/") && m.Root != "/") {
				continue
			}
			procs := filepath.Join(m.Mountpoint, path.Clean("/"+rel), "cgroup.procs")
			if _, err := os.Stat(procs); err == nil {
				return procs, nil
			}
		}
	}
	return "", os.ErrNotExist
}

// HoldsController reports whether a cgroup mount is ctrl's hierarchy (""
// for v2; a v1 named hierarchy as "name=systemd").
func HoldsController(m *mountinfo.Info, ctrl string) bool {
	if ctrl == "" {
		return m.FSType == "cgroup2"
	}
	return m.FSType == "cgroup" && slices.Contains(strings.Split(m.VFSOptions, ","), ctrl)
}
