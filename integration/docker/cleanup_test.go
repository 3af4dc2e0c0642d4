package docker_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ckpt-dev/ckpt/integration/containerd/harness"
	"golang.org/x/sys/unix"
)

// stop removes everything the engine made: containers, daemons, shims,
// container processes, the namespaces (mounts and iptables rules die
// with them), runc state, cgroups and the dir. It is safe on a
// half-started engine.
func (e *engine) stop(t *testing.T) {
	if e.dockerd != nil && !e.dockerd.exited() {
		if ids, err := e.docker("ps", "-aq"); err == nil && strings.TrimSpace(ids) != "" {
			if out, err := e.docker(append([]string{"rm", "-f"}, strings.Fields(ids)...)...); err != nil {
				t.Logf("cleanup: docker rm -f: %v\n%s", err, out)
			}
		}
	}
	if e.ctrd != nil {
		e.ctrd.Close()
	}
	for _, d := range []*daemon{e.dockerd, e.containerd} {
		if d != nil && d.cmd != nil && d.cmd.Process != nil {
			terminate(d, 20*time.Second)
		}
	}
	// Shims and container processes that outlived the daemons.
	e.killLeftovers(t)
	if e.keeper != nil && e.keeper.cmd != nil && e.keeper.cmd.Process != nil {
		terminate(e.keeper, 5*time.Second)
	}
	if out, err := exec.Command("ip", "netns", "del", e.netns).CombinedOutput(); err != nil && !strings.Contains(string(out), "No such file") {
		t.Errorf("cleanup: ip netns del %s: %v\n%s", e.netns, err, out)
	}
	for _, root := range []string{filepath.Join("/run/containerd/ckpt", e.ns), filepath.Join("/run/containerd/runc", e.ns)} {
		removeRuncState(root)
	}
	removeCgroups(e.cgroupParent)
	if err := harness.UnmountUnder(e.dir); err != nil {
		t.Errorf("cleanup: %v", err)
	}
	if err := os.RemoveAll(e.dir); err != nil {
		t.Errorf("cleanup: %v", err)
	}
}

func terminate(d *daemon, grace time.Duration) {
	if d.exited() {
		return
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(grace):
		d.cmd.Process.Kill()
		<-d.done
	}
}

// killLeftovers kills the processes still in the engine's network or
// mount namespace (shims) or in its cgroups (containers); frozen ones are
// thawed first, or SIGKILL would wait for them.
func (e *engine) killLeftovers(t *testing.T) {
	var nsInodes []uint64
	if ino, err := inode(filepath.Join("/run/netns", e.netns)); err == nil {
		nsInodes = append(nsInodes, ino)
	}
	if e.keeper != nil && e.keeper.cmd != nil && e.keeper.cmd.Process != nil && !e.keeper.exited() {
		if ino, err := inode(filepath.Join("/proc", strconv.Itoa(e.keeper.cmd.Process.Pid), "ns", "mnt")); err == nil {
			nsInodes = append(nsInodes, ino)
		}
	}
	thaw(e.cgroupParent)
	keeper := -1
	if e.keeper != nil && e.keeper.cmd != nil && e.keeper.cmd.Process != nil {
		keeper = e.keeper.cmd.Process.Pid
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids := cgroupPids(e.cgroupParent)
		for _, pid := range namespacePids(nsInodes) {
			if pid != keeper {
				pids = append(pids, pid)
			}
		}
		if len(pids) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("cleanup: processes %v survive SIGKILL", pids)
			return
		}
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func inode(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// namespacePids are the pids whose network or mount namespace has one of
// the inodes.
func namespacePids(inodes []uint64) []int {
	if len(inodes) == 0 {
		return nil
	}
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, ent := range entries {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		for _, ns := range []string{"net", "mnt"} {
			ino, err := inode(filepath.Join("/proc", ent.Name(), "ns", ns))
			if err != nil {
				continue
			}
			for _, want := range inodes {
				if ino == want {
					pids = append(pids, pid)
				}
			}
		}
	}
	return pids
}

// cgroupDirs are parent's dirs in every cgroup hierarchy.
func cgroupDirs(parent string) []string {
	dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", parent))
	if fi, err := os.Stat(filepath.Join("/sys/fs/cgroup", parent)); err == nil && fi.IsDir() {
		dirs = append(dirs, filepath.Join("/sys/fs/cgroup", parent))
	}
	return dirs
}

func cgroupPids(parent string) []int {
	var pids []int
	for _, d := range cgroupDirs(parent) {
		filepath.WalkDir(d, func(p string, ent os.DirEntry, err error) error {
			if err != nil || ent.IsDir() || ent.Name() != "cgroup.procs" {
				return nil
			}
			data, _ := os.ReadFile(p)
			for _, f := range strings.Fields(string(data)) {
				if pid, err := strconv.Atoi(f); err == nil {
					pids = append(pids, pid)
				}
			}
			return nil
		})
	}
	return pids
}

func thaw(parent string) {
	for _, d := range cgroupDirs(parent) {
		filepath.WalkDir(d, func(p string, ent os.DirEntry, err error) error {
			if err == nil && !ent.IsDir() && ent.Name() == "freezer.state" {
				os.WriteFile(p, []byte("THAWED"), 0)
			}
			return nil
		})
	}
}

// removeCgroups removes parent's cgroups, deepest first.
func removeCgroups(parent string) {
	for _, d := range cgroupDirs(parent) {
		var dirs []string
		filepath.WalkDir(d, func(p string, ent os.DirEntry, err error) error {
			if err == nil && ent.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
		for _, dir := range dirs {
			syscall.Rmdir(dir)
		}
	}
}

// removeRuncState force-deletes what runc still knows under root, then
// root itself.
func removeRuncState(root string) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return
	}
	for _, ent := range entries {
		if ent.IsDir() {
			exec.Command("runc", "--root", root, "delete", "--force", ent.Name()).Run()
		}
	}
	os.RemoveAll(root)
}
