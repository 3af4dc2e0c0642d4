package cgroup

import (
	"bufio"
	"bytes"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/moby/sys/mountinfo"
)

// cgroupFSRoot is where the host's cgroup hierarchies are mounted.
const cgroupFSRoot = "/sys/fs/cgroup"

// A CRIU that manages cgroups mounts every hierarchy afresh into a private
// "yard" at each dump and restore. A fresh cgroup2 mount costs ~10 ms on
// this kernel (a hybrid host's controller-less v2 included), at dump and
// again at restore. CRIU takes a ready yard instead (cgroup_yard): a
// directory holding each hierarchy under the name CRIU gives it. On a v1 or
// hybrid host /sys/fs/cgroup is exactly that ("cpu,cpuacct", "systemd",
// "unified"), so ckpt hands it over when every hierarchy is there, mounted
// whole. A unified-only host has no such layout and CRIU keeps its own.
//
// CRIU creates and mounts a hierarchy missing from a yard itself, which in
// /sys/fs/cgroup would leave a mount on the host; hence the strict check
// here and, at restore, the image's hierarchies checked against the yard.

// Yard returns the yard CRIU can use on this host and the names of
// the hierarchies in it, or "" and nil.
func Yard() (string, []string) {
	if V2() {
		return "", nil
	}
	procCgroup, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", nil
	}
	mounts, err := mountinfo.GetMounts(mountinfo.FSTypeFilter("cgroup", "cgroup2"))
	if err != nil {
		return "", nil
	}
	names := yardNames(procCgroup)
	if !yardComplete(cgroupFSRoot, names, mounts) {
		return "", nil
	}
	return cgroupFSRoot, names
}

// RestoreYard is Yard for a restore of an image whose tasks
// were in the hierarchies dumped (CRIU's names, from ckpt.json): "" unless
// the yard holds every one of them.
func RestoreYard(dumped []string) string {
	if len(dumped) == 0 {
		return ""
	}
	dir, names := Yard()
	for _, n := range dumped {
		if !slices.Contains(names, n) {
			return ""
		}
	}
	return dir
}

// yardNames are the yard directory names CRIU uses for the hierarchies of
// a /proc/<pid>/cgroup: the controllers as listed, comma-joined, "name="
// dropped from named ones, "unified" for cgroup2.
func yardNames(procCgroup []byte) []string {
	var names []string
	sc := bufio.NewScanner(bytes.NewReader(procCgroup))
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		name := "unified"
		if parts[1] != "" {
			ctrls := strings.Split(parts[1], ",")
			for i, c := range ctrls {
				ctrls[i] = strings.TrimPrefix(c, "name=")
			}
			name = strings.Join(ctrls, ",")
		}
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	return names
}

// yardComplete reports whether every named hierarchy is mounted, whole
// (root "/"), at dir/<name>.
func yardComplete(dir string, names []string, mounts []*mountinfo.Info) bool {
	if len(names) == 0 {
		return false
	}
	for _, n := range names {
		if !slices.ContainsFunc(mounts, func(m *mountinfo.Info) bool {
			return m.Mountpoint == path.Join(dir, n) && m.Root == "/" && mountHolds(m, n)
		}) {
			return false
		}
	}
	return true
}

// mountHolds reports whether a cgroup mount is the hierarchy CRIU names n.
func mountHolds(m *mountinfo.Info, n string) bool {
	if n == "unified" {
		return m.FSType == "cgroup2"
	}
	if m.FSType != "cgroup" {
		return false
	}
	opts := strings.Split(m.VFSOptions, ",")
	for _, c := range strings.Split(n, ",") {
		if !slices.Contains(opts, c) && !slices.Contains(opts, "name="+c) {
			return false
		}
	}
	return true
}
