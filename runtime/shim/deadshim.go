package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// ctrdCheckpointFile records, in the bundle, containerd's temp copy of a
// restore's checkpoint (ctrdtemp.go), for the cleanup after a crash.
const ctrdCheckpointFile = "ckpt-ctrd-checkpoint"

// deadShimGrace bounds each wait of the cleanup after a dead shim:
// containerd gives the whole `shim delete` 5 s by default
// (io.containerd.timeout.shim.cleanup).
const deadShimGrace = time.Second

// cleanupDeadRestore removes what a shim killed during a restore leaves
// and `runc delete` cannot see, since ckpt writes runc's state.json only
// at CRIU's post-restore: the restored tree (held at setup-namespaces or
// stopped mid-restore once criu died with the shim), its cgroups, CRIU's
// mounts (criu-root, recreated tmpfs) in runc's state dir and the dir
// itself, CRIU's work dir mounts in the bundle, and containerd's temp copy
// of the checkpoint. It is `shim delete`'s (manager.Stop) second step,
// after runc delete; a container runc deleted has no state dir left, and
// one whose state.json is there is runc's: nothing is done to either.
func cleanupDeadRestore(ctx context.Context, bundle, id string, rc runtimeConfig) {
	logger := log.G(ctx).WithField("id", id)
	dropRecordedCheckpoint(ctx, bundle)
	if err := mount.UnmountRecursive(filepath.Join(bundle, "criu-work"), 0); err != nil {
		logger.WithError(err).Warn("unmount what CRIU left in its work dir")
	}
	stateDir := filepath.Join(rc.Root, id)
	if _, err := os.Stat(stateDir); err != nil {
		return
	}
	if _, err := os.Stat(filepath.Join(stateDir, "state.json")); err == nil {
		// runc's container, which runc delete failed to remove (logged).
		return
	}
	logger.Info("cleaning up a restore the shim did not finish")
	var pids []int
	if pid, err := strconv.Atoi(readTrimmed(filepath.Join(bundle, "init.pid"))); err == nil && pidNSInit(pid) {
		// The restored init of a pid namespace: its death kills the rest.
		pids = append(pids, pid)
	}
	cgDirs := cgroupDirs(bundle, rc)
	for _, dir := range cgDirs {
		pids = append(pids, cgroupProcs(dir)...)
	}
	for _, pid := range pids {
		unix.Kill(pid, unix.SIGKILL)
	}
	for _, pid := range pids {
		waitGone(pid, deadShimGrace)
	}
	if err := mount.UnmountRecursive(stateDir, 0); err != nil {
		logger.WithError(err).Warn("unmount CRIU's mounts in runc's state dir")
	}
	if err := os.RemoveAll(stateDir); err != nil {
		logger.WithError(err).Warn("remove runc's state dir")
	}
	for _, dir := range cgDirs {
		if err := removeCgroupDir(dir, deadShimGrace); err != nil {
			logger.WithError(err).Warn("remove the container's cgroup")
		}
	}
}

// dropRecordedCheckpoint removes containerd's temp copy of the checkpoint
// that a dead shim's restore recorded, if it is still what it was.
func dropRecordedCheckpoint(ctx context.Context, bundle string) {
	dir := readTrimmed(filepath.Join(bundle, ctrdCheckpointFile))
	if dir == "" {
		return
	}
	if !strings.HasPrefix(filepath.Base(dir), ctrdCheckpointPrefix) {
		return
	}
	if fi, err := os.Lstat(dir); err != nil || !fi.IsDir() {
		return
	}
	if err := os.RemoveAll(dir); err != nil {
		log.G(ctx).WithError(err).WithField("dir", dir).Warn("remove containerd's checkpoint temp dir")
	}
}

func readTrimmed(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(data))
}

// pidNSInit reports whether pid is pid 1 of a pid namespace below ours:
// a pid reused since init.pid was written would not be (unless it is
// another container's init, which the caller must accept as a risk no
// smaller than runc's own pid files carry).
func pidNSInit(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "NSpid:"); ok {
			f := strings.Fields(v)
			return len(f) > 1 && f[len(f)-1] == "1"
		}
	}
	return false
}

// cgroupDirs are the container's cgroup dirs in every hierarchy, from the
// bundle's cgroupsPath; none under the systemd driver (its paths name a
// unit, which systemd removes once it is empty).
func cgroupDirs(bundle string, rc runtimeConfig) []string {
	if rc.SystemdCgroup {
		return nil
	}
	data, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return nil
	}
	var spec specs.Spec
	if json.Unmarshal(data, &spec) != nil || spec.Linux == nil {
		return nil
	}
	p := spec.Linux.CgroupsPath
	if !filepath.IsAbs(p) || strings.Contains(p, ":") || filepath.Clean(p) == "/" {
		return nil
	}
	if cgroups.Mode() == cgroups.Unified {
		return []string{filepath.Join("/sys/fs/cgroup", p)}
	}
	var dirs []string
	hierarchies, _ := os.ReadDir("/sys/fs/cgroup")
	for _, h := range hierarchies {
		if dir := filepath.Join("/sys/fs/cgroup", h.Name(), p); isDir(dir) {
			dirs = append(dirs, dir)
		}
	}
	return dirs
}

func isDir(p string) bool {
	fi, err := os.Lstat(p)
	return err == nil && fi.IsDir()
}

// cgroupProcs lists the processes in dir and the cgroups below it.
func cgroupProcs(dir string) []int {
	var pids []int
	filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err != nil || !e.IsDir() {
			return nil
		}
		for _, f := range strings.Fields(readTrimmed(filepath.Join(p, "cgroup.procs"))) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	return pids
}

// waitGone waits until pid is gone or a zombie, at most grace.
func waitGone(pid int, grace time.Duration) {
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return
		}
		if i := strings.LastIndexByte(string(data), ')'); i > 0 && i+2 < len(data) && data[i+2] == 'Z' {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// removeCgroupDir removes dir and the cgroups below it, deepest first,
// retrying while the killed processes leave them (EBUSY), at most grace.
func removeCgroupDir(dir string, grace time.Duration) error {
	var dirs []string
	filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err == nil && e.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	deadline := time.Now().Add(grace)
	for i := len(dirs) - 1; i >= 0; i-- {
		for {
			err := unix.Rmdir(dirs[i])
			if err == nil || errors.Is(err, unix.ENOENT) {
				break
			}
			if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
				return fmt.Errorf("rmdir %s: %w", dirs[i], err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return nil
}
