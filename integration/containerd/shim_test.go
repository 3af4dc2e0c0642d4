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
	"github.com/ckpt-dev/ckpt/integration/internal/testutil"
	"github.com/containerd/containerd/api/types/runc/options"
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

	c := newContainerWithOptions(t, d, ctx, &options.Options{ShimCgroup: name}, []string{"sh", "-c", "echo up; exec sleep 1000"})
	out := &syncBuffer{}
	startTask(t, ctx, c, streams(d, nil, out, out, false))
	waitOutput(t, out, "up", 10*time.Second)

	pid, ok := harness.Shims(d.Address)[c.ID()]
	if !ok {
		t.Fatalf("no serving shim for %s", c.ID())
	}
	cgs, err := testutil.CgroupsOf(strconv.Itoa(pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, cg := range cgs {
		if _, ours := dirs[cg.Controllers]; ours && cg.Path != name {
			t.Errorf("the shim (pid %d) is in %s in hierarchy %q, want %s", pid, cg.Path, cg.Controllers, name)
		}
	}
}

// makeShimCgroup creates the cgroup name in every hierarchy, so that any
// move of the shim shows, and removes it when the test ends, once the
// shim has left it. It returns the dirs by controllers, as
// /proc/PID/cgroup names them.
func makeShimCgroup(t *testing.T, name string) map[string]string {
	t.Helper()
	cgs, err := testutil.CgroupsOf("self")
	if err != nil {
		t.Fatal(err)
	}
	dirs := map[string]string{}
	for _, cg := range cgs {
		if _, err := os.Stat(filepath.Join(cg.Dir, "cgroup.procs")); err != nil {
			// Listed but not mounted here (the v2 line of a hybrid host,
			// in a container that mounts only the v1 hierarchies).
			continue
		}
		dir := filepath.Join(cg.Dir, name)
		dirs[cg.Controllers] = dir
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		// A v1 cpuset takes no task before it has cpus and mems.
		if strings.Contains(cg.Controllers, "cpuset") {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				parent, err := os.ReadFile(filepath.Join(cg.Dir, f))
				if err == nil {
					err = os.WriteFile(filepath.Join(dir, f), parent, 0)
				}
				if err != nil {
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
		t.Fatal("no cgroup hierarchy of this process is mounted under /sys/fs/cgroup")
	}
	return dirs
}
