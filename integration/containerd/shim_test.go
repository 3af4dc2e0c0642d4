package containerd_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ckpt-dev/ckpt/integration/containerd/harness"
	"github.com/containerd/cgroups/v3"
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/oci"
	"golang.org/x/sys/unix"
)

// TestShimCgroup: the runtime options' ShimCgroup puts the serving shim in
// that cgroup, and it stays there while it serves the task. A shim that
// start leaves where it is moves itself into its own cgroup at once, to
// take the cgroup migration lock early; one that start moves must not, or
// the two moves would race and the shim could end up back where it came
// from.
func TestShimCgroup(t *testing.T) {
	d := daemon(t)
	ctx := testContext(t, d)
	name := fmt.Sprintf("/ckpt-it-shim-cgroup-%d", os.Getpid())
	dirs := makeShimCgroup(t, name)

	id := fmt.Sprintf("shim-cgroup-%d", seq.Add(1))
	c, err := d.Client.NewContainer(ctx, id,
		client.WithNewSnapshot(id, d.Image),
		client.WithNewSpec(oci.WithImageConfig(d.Image), oci.WithProcessArgs("sh", "-c", "echo up; exec sleep 1000")),
		client.WithRuntime(harness.Runtime, &options.Options{ShimCgroup: name}),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeContainer(t, d, c) })
	out := &syncBuffer{}
	startTask(t, ctx, c, streams(d, nil, out, out, false))
	waitOutput(t, out, "up", 10*time.Second)

	pid := servingShim(t, id)
	for hierarchy, path := range cgroupsOf(t, pid) {
		if _, ours := dirs[hierarchy]; ours && path != name {
			t.Errorf("the shim (pid %d) is in %s in hierarchy %q, want %s", pid, path, hierarchy, name)
		}
	}
}

// makeShimCgroup creates the cgroup name in every hierarchy, so that any
// move of the shim shows, and removes it when the test ends, once the
// shim has left it. It returns the hierarchies, keyed as /proc/PID/cgroup
// names them.
func makeShimCgroup(t *testing.T, name string) map[string]string {
	t.Helper()
	dirs := map[string]string{}
	if cgroups.Mode() == cgroups.Unified {
		dirs[""] = filepath.Join("/sys/fs/cgroup", name)
	} else {
		for _, l := range strings.Split(strings.TrimSpace(readFile(t, "/proc/self/cgroup")), "\n") {
			parts := strings.SplitN(l, ":", 3)
			if len(parts) != 3 {
				continue
			}
			h := strings.TrimPrefix(parts[1], "name=")
			if h == "" {
				h = "unified"
			}
			if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", h, "cgroup.procs")); err == nil {
				dirs[parts[1]] = filepath.Join("/sys/fs/cgroup", h, name)
			}
		}
	}
	for _, dir := range dirs {
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		// A v1 cpuset takes no task before it has cpus and mems.
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if cgroups.Mode() == cgroups.Unified {
				break
			}
			if parent, err := os.ReadFile(filepath.Join(filepath.Dir(dir), f)); err == nil {
				if err := os.WriteFile(filepath.Join(dir, f), parent, 0); err != nil {
					t.Fatal(err)
				}
			}
		}
		t.Cleanup(func() {
			// The shim exits a moment after the task is deleted.
			deadline := time.Now().Add(10 * time.Second)
			for err := os.Remove(dir); err != nil; err = os.Remove(dir) {
				if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
					t.Errorf("remove the shim cgroup %s: %v", dir, err)
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
	if len(dirs) == 0 {
		t.Fatal("no cgroup hierarchy under /sys/fs/cgroup")
	}
	return dirs
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// servingShim is the pid of ckpt's serving shim for container id.
func servingShim(t *testing.T, id string) int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
		if filepath.Base(args[0]) != "containerd-shim-ckpt-v2" {
			continue
		}
		for i := 0; i+1 < len(args); i++ {
			if args[i] == "-id" && args[i+1] == id {
				return pid
			}
		}
	}
	t.Fatalf("no serving shim for %s", id)
	return 0
}

// cgroupsOf is /proc/PID/cgroup: controllers ("" for v2) -> path.
func cgroupsOf(t *testing.T, pid int) map[string]string {
	t.Helper()
	paths := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(readFile(t, fmt.Sprintf("/proc/%d/cgroup", pid))), "\n") {
		if parts := strings.SplitN(l, ":", 3); len(parts) == 3 {
			paths[parts[1]] = parts[2]
		}
	}
	return paths
}
