// Package soak runs many checkpoint/restore cycles of one container
// through ckpt's shim under a private containerd (integration/containerd's
// harness) and measures what the host holds before, during and after:
// mounts, cgroups, shims, open files, ckpt's and runc's state, containerd's
// checkpoint temp dirs, memory. `make soak` runs it long
// (integration/soak/cmd); integration/containerd's TestSoakShort runs it
// short in CI. Nothing in the product imports it.
package soak

import (
	"bufio"
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/ckpt-dev/ckpt/integration/containerd/harness"
)

// Sample is one measurement. The counts must not grow over cycles; the
// memory figures are reported, not asserted (containerd's Go heap grows
// and shrinks with its GC).
type Sample struct {
	// Mounts under the daemon's dir (bundles, rootfs, CRIU's work dirs)
	// and under runc's state root (CRIU's criu-root, recreated tmpfs).
	Mounts int
	// HostMounts is every mount of containerd's mount namespace (shown
	// only: other programs mount too).
	HostMounts int
	// Cgroups is the number of cgroup directories below the containers'
	// cgroup parent in every hierarchy.
	Cgroups int
	// Shims is the number of shim processes serving the daemon.
	Shims int
	// FDs is the open descriptors of containerd and the shims.
	FDs int
	// RunCkpt is the number of files under /run/ckpt.
	RunCkpt int
	// RuncState is the number of files under runc's state root of the
	// namespace.
	RuncState int
	// CtrdCheckpoint is the number of ctrd-checkpoint* dirs containerd
	// left in its XDG_RUNTIME_DIR.
	CtrdCheckpoint int
	// RSSKiB and PSSKiB are containerd's and the shims' memory.
	RSSKiB, PSSKiB int
}

// Counts are the sample's figures that must not grow, by name, in the
// order they are printed.
func (s Sample) Counts() []Count {
	return []Count{
		{"mounts", s.Mounts}, {"cgroups", s.Cgroups}, {"shims", s.Shims}, {"fds", s.FDs},
		{"run-ckpt-files", s.RunCkpt}, {"runc-state-files", s.RuncState}, {"ctrd-checkpoint-dirs", s.CtrdCheckpoint},
	}
}

// Count is one named figure.
type Count struct {
	Name  string
	Value int
}

// Growth lists the counts that are higher in s than in base.
func (s Sample) Growth(base Sample) []string {
	var out []string
	b := base.Counts()
	for i, c := range s.Counts() {
		if c.Value > b[i].Value {
			out = append(out, fmt.Sprintf("%s %d -> %d", c.Name, b[i].Value, c.Value))
		}
	}
	return out
}

func (s Sample) String() string {
	var b strings.Builder
	for _, c := range s.Counts() {
		fmt.Fprintf(&b, "%s=%d ", c.Name, c.Value)
	}
	fmt.Fprintf(&b, "host-mounts=%d rss=%dKiB pss=%dKiB", s.HostMounts, s.RSSKiB, s.PSSKiB)
	return b.String()
}

// Target says where a containerd keeps what Measure counts.
type Target struct {
	// Dir holds containerd's root, state and sockets; Address is its
	// gRPC socket, which names the shims serving it.
	Dir, Address string
	// RuncRoot is the shim's runc state root of the namespace.
	RuncRoot string
	// CgroupParent is the cgroup (below each hierarchy's root) that holds
	// the containers' cgroups.
	CgroupParent string
	// TempDir is containerd's XDG_RUNTIME_DIR.
	TempDir string
	// Daemons are containerd's pid and any other daemon's (dockerd)
	// whose descriptors and memory count; Daemons[0] is containerd, whose
	// mount namespace is the one looked at.
	Daemons []int
}

// TargetOf is the target of a harness daemon.
func TargetOf(d *harness.Daemon) Target {
	return Target{Dir: d.Dir, Address: d.Address, RuncRoot: d.RuncRoot, CgroupParent: d.Namespace,
		TempDir: d.XDGRuntimeDir(), Daemons: []int{d.Pid()}}
}

// Measure samples the host for the daemon d.
func Measure(d *harness.Daemon) Sample { return MeasureTarget(TargetOf(d)) }

// MeasureTarget samples the host for the target.
func MeasureTarget(tg Target) Sample {
	var s Sample
	s.Mounts, s.HostMounts = mounts(fmt.Sprintf("/proc/%d/mountinfo", tg.Daemons[0]), tg.Dir, tg.RuncRoot)
	s.Cgroups = cgroups(tg.CgroupParent)
	pids := slices.Clone(tg.Daemons)
	shims := harness.Shims(tg.Address)
	s.Shims = len(shims)
	for _, pid := range shims {
		pids = append(pids, pid)
	}
	for _, pid := range pids {
		s.FDs += fds(pid)
		rss, pss := memory(pid)
		s.RSSKiB += rss
		s.PSSKiB += pss
	}
	s.RunCkpt = files("/run/ckpt")
	s.RuncState = files(tg.RuncRoot)
	dirs, _ := filepath.Glob(filepath.Join(tg.TempDir, "ctrd-checkpoint*"))
	s.CtrdCheckpoint = len(dirs)
	return s
}

// mounts counts the mounts of a mountinfo file below any of dirs, and
// all of them.
func mounts(mountinfo string, dirs ...string) (ours, all int) {
	data, err := os.ReadFile(mountinfo)
	if err != nil {
		return -1, -1
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 5 {
			continue
		}
		all++
		for _, d := range dirs {
			if strings.HasPrefix(f[4], filepath.Clean(d)+"/") {
				ours++
				break
			}
		}
	}
	return ours, all
}

// cgroups counts the directories below the namespace's cgroup (containerd's
// default cgroupsPath is /<namespace>/<id>) in every hierarchy.
func cgroups(ns string) int {
	roots, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", ns))
	if fi, err := os.Stat(filepath.Join("/sys/fs/cgroup", ns)); err == nil && fi.IsDir() {
		roots = append(roots, filepath.Join("/sys/fs/cgroup", ns))
	}
	n := 0
	for _, r := range roots {
		filepath.WalkDir(r, func(p string, e fs.DirEntry, err error) error {
			if err == nil && e.IsDir() && p != r {
				n++
			}
			return nil
		})
	}
	return n
}

// files counts the non-directories under dir.
func files(dir string) int {
	n := 0
	filepath.WalkDir(dir, func(_ string, e fs.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			n++
		}
		return nil
	})
	return n
}

func fds(pid int) int {
	es, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0
	}
	return len(es)
}

// RSSKiB is a process's resident memory in KiB (0 if gone).
func RSSKiB(pid int) int {
	rss, _ := memory(pid)
	return rss
}

// memory reads a process's Rss and Pss in KiB.
func memory(pid int) (rss, pss int) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0, 0
	}
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.Atoi(f[1])
		switch f[0] {
		case "Rss:":
			rss = v
		case "Pss:":
			pss = v
		}
	}
	return rss, pss
}
