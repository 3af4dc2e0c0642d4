package migrate_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	ctrd "github.com/ckpt-dev/ckpt/integration/containerd/harness"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
)

// TestHostsHoldSameID: the source and the target hold a task of the same
// container id, namespace and spec at once, as during a post-copy move (a
// frozen source, a restored target): they do not collide on the shim's
// runc root, restore records or cgroups, and pausing the source does not
// freeze the target. Both then delete cleanly and leave nothing.
func TestHostsHoldSameID(t *testing.T) {
	h := hosts(t)
	id := fmt.Sprintf("TestHostsHoldSameID-%d", seq.Add(1))
	type side struct {
		name string
		d    *ctrd.Daemon
		c    client.Container
		task client.Task
		out  *syncBuffer
		cg   []string // /proc/PID/cgroup of the init, from here
	}
	sides := []*side{{name: "source", d: h.Src}, {name: "target", d: h.Dst}}
	for _, s := range sides {
		t.Cleanup(func() { removeContainer(t, s.d, id) })
		s.c = newContainerOn(t, s.d, id, counter)
		s.out = &syncBuffer{}
		s.task = startTaskOn(t, s.d, s.c, s.out)
	}
	for _, s := range sides {
		expectCounts(t, s.out, 3, 10*time.Second)
		st, err := s.task.Status(s.d.Context(context.Background()))
		if err != nil || st.Status != client.Running {
			t.Fatalf("the %s's task is %v (%v), want running", s.name, st.Status, err)
		}
		s.cg = procCgroups(t, s.task.Pid())
		t.Logf("the %s's init, pid %d, is in %s", s.name, s.task.Pid(), strings.Join(s.cg, " "))
		for _, l := range s.cg {
			if want := "/" + s.d.HostCgroup + "/" + s.d.Namespace + "/" + id; !strings.HasSuffix(l, ":"+want) {
				t.Errorf("the %s's init is in %q, want %s (its namespace's cgroup under its host's)", s.name, l, want)
			}
		}
		if _, err := os.Stat(filepath.Join(s.d.RuncRoot, id)); err != nil {
			t.Errorf("the %s has no runc state for %s: %v", s.name, id, err)
		}
		if !mountsName(t, s.d, id) {
			t.Errorf("the %s's mount table shows no mount of %s (the leak check below would see nothing)", s.name, id)
		}
	}
	for i, l := range sides[0].cg {
		if i < len(sides[1].cg) && l == sides[1].cg[i] {
			t.Errorf("source and target share cgroup %q", l)
		}
	}

	src, dst := sides[0], sides[1]
	ctx := src.d.Context(context.Background())
	if err := src.task.Pause(ctx); err != nil {
		t.Fatalf("pause the source: %v", err)
	}
	time.Sleep(200 * time.Millisecond) // a line written as the freeze came
	frozenAt := lastNumber(src.out.String())
	expectCounts(t, dst.out, lastNumber(dst.out.String())+10, 10*time.Second)
	if state := procState(t, dst.task.Pid()); strings.HasPrefix(state, "D") || strings.HasPrefix(state, "T") {
		t.Errorf("the target's init is %q while the source is paused", state)
	}
	if n := lastNumber(src.out.String()); n != frozenAt {
		t.Errorf("the paused source counted on from %d to %d", frozenAt, n)
	}
	if err := src.task.Resume(ctx); err != nil {
		t.Fatalf("resume the source: %v", err)
	}
	expectCounts(t, src.out, frozenAt, 10*time.Second)

	for _, s := range sides {
		ctx := s.d.Context(context.Background())
		ch, err := s.task.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.task.Kill(ctx, syscall.SIGKILL); err != nil {
			t.Fatalf("kill the %s's task: %v", s.name, err)
		}
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Fatalf("the %s's task did not exit", s.name)
		}
		if _, err := s.task.Delete(ctx); err != nil {
			t.Fatalf("delete the %s's task: %v", s.name, err)
		}
		if err := s.c.Delete(ctx, client.WithSnapshotCleanup); err != nil {
			t.Fatalf("delete the %s's container: %v", s.name, err)
		}
	}
	for _, s := range sides {
		if _, err := os.Stat(filepath.Join(s.d.RuncRoot, id)); err == nil {
			t.Errorf("the %s keeps runc state %s", s.name, filepath.Join(s.d.RuncRoot, id))
		}
		if mountsName(t, s.d, id) {
			t.Errorf("the %s keeps a mount of %s", s.name, id)
		}
		for _, l := range s.cg {
			if dirs := cgroupDirs(l); len(dirs) > 0 {
				t.Errorf("the %s keeps cgroup %v", s.name, dirs)
			}
		}
	}
}

// newContainerOn creates container id on d, from d's image.
func newContainerOn(t *testing.T, d *ctrd.Daemon, id string, args []string) client.Container {
	t.Helper()
	ctx := d.Context(context.Background())
	c, err := d.Client.NewContainer(ctx, id,
		client.WithNewSnapshot(id, d.Image),
		client.WithNewSpec(oci.WithImageConfig(d.Image), oci.WithProcessArgs(args...)),
		client.WithRuntime(ctrd.Runtime, nil),
	)
	if err != nil {
		t.Fatalf("create %s: %v", id, err)
	}
	return c
}

// startTaskOn starts c's task on d, its output to out.
func startTaskOn(t *testing.T, d *ctrd.Daemon, c client.Container, out *syncBuffer) client.Task {
	t.Helper()
	ctx := d.Context(context.Background())
	task, err := c.NewTask(ctx, cio.NewCreator(cio.WithFIFODir(filepath.Join(d.Dir, "fifo")), cio.WithStreams(nil, out, out)))
	if err != nil {
		t.Fatalf("task of %s: %v", c.ID(), err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatalf("start %s: %v", c.ID(), err)
	}
	return task
}

// procCgroups is pid's /proc/PID/cgroup, one line a hierarchy. The test
// is outside both hosts' cgroup namespaces, so the paths are full ones.
func procCgroups(t *testing.T, pid uint32) []string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		// A hierarchy nobody mounted (v2 beside v1 ones in a container)
		// is not the hosts'.
		if strings.HasSuffix(l, ":/") {
			continue
		}
		lines = append(lines, l)
	}
	return lines
}

func procState(t *testing.T, pid uint32) string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "State:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// cgroupDirs are the dirs of a /proc/PID/cgroup line's path in any
// hierarchy under /sys/fs/cgroup.
func cgroupDirs(line string) []string {
	parts := strings.SplitN(line, ":", 3)
	if len(parts) != 3 {
		return nil
	}
	cands, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", parts[2]))
	cands = append(cands, filepath.Join("/sys/fs/cgroup", parts[2]))
	var dirs []string
	for _, c := range cands {
		if fi, err := os.Stat(c); err == nil && fi.IsDir() {
			dirs = append(dirs, c)
		}
	}
	return dirs
}

// mountsName says whether d's mount table, as d sees it, has a mount
// whose mount point names id (the task's rootfs).
func mountsName(t *testing.T, d *ctrd.Daemon, id string) bool {
	t.Helper()
	data, err := d.Mountinfo()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range bytes.Split(data, []byte("\n")) {
		if f := strings.Fields(string(l)); len(f) > 4 && strings.Contains(f[4], "/"+id+"/") {
			return true
		}
	}
	return false
}
