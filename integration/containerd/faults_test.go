package containerd_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ckpt-dev/ckpt/integration/containerd/harness"
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// slowCounter is the counter with 64 MiB of random data in a tmpfs of its
// own, which CRIU archives at dump and unpacks at restore: each takes a
// second or more, time enough to kill something in the middle.
var slowCounter = []string{"sh", "-c", "head -c 64m /dev/urandom > /data/blob; i=0; while :; do i=$((i+1)); echo $i; sleep 0.02; done"}

var dataTmpfs = oci.WithMounts([]specs.Mount{{Destination: "/data", Type: "tmpfs", Source: "tmpfs", Options: []string{"size=128m"}}})

// shimOf is the pid of the shim serving c.
func shimOf(t *testing.T, d *harness.Daemon, c client.Container) int {
	t.Helper()
	pid, ok := harness.Shims(d.Address)[c.ID()]
	if !ok {
		t.Fatalf("no shim serves %s", c.ID())
	}
	return pid
}

// childNamed waits for a child of parent whose command is name.
func childNamed(t *testing.T, parent int, name string, timeout time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			if comm, ppid := procStatus(pid); comm == name && ppid == parent {
				return pid
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("no %s under pid %d after %s", name, parent, timeout)
	return 0
}

// procStatus reads a process's command name and parent pid.
func procStatus(pid int) (comm string, ppid int) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "", 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		switch k {
		case "Name":
			comm = strings.TrimSpace(v)
		case "PPid":
			ppid, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return comm, ppid
}

// waitEnd waits for the end of a Wait whose shim was killed: containerd
// ends it with the shim's connection (ttrpc: closed), or with the exit
// the dead shim's cleanup reports.
func waitEnd(t *testing.T, ch <-chan client.ExitStatus, timeout time.Duration) {
	t.Helper()
	select {
	case st := <-ch:
		t.Logf("wait after the shim's death: exit %d, %v", st.ExitCode(), st.Error())
	case <-time.After(timeout):
		t.Fatalf("the wait did not end %s after the shim's death", timeout)
	}
}

// expectNothingLeft waits until containerd has no task for c and checks
// that nothing of it is left: the processes given, the bundle, runc's
// state, mounts under either, cgroups.
func expectNothingLeft(t *testing.T, d *harness.Daemon, ctx context.Context, c client.Container, pids ...int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := c.Task(ctx, nil)
		if errdefs.IsNotFound(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd still has the task of %s after 20s (%v)", c.ID(), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// containerd removes the bundle once the dead shim's cleanup (`shim
	// delete`) is done.
	bundle := filepath.Join(d.Dir, "state", "io.containerd.runtime.v2.task", d.Namespace, c.ID())
	for _, err := os.Stat(bundle); err == nil; _, err = os.Stat(bundle) {
		if time.Now().After(deadline) {
			t.Errorf("the bundle %s is left", bundle)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, pid := range pids {
		for !processGone(pid) {
			if time.Now().After(deadline) {
				comm, _ := procStatus(pid)
				t.Errorf("process %d (%s) is left", pid, comm)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	state := filepath.Join(d.RuncRoot, c.ID())
	if _, err := os.Stat(state); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("runc's state %s is left (%v)", state, err)
	}
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if f := strings.Fields(l); len(f) > 4 && (strings.HasPrefix(f[4], bundle+"/") || strings.HasPrefix(f[4], state+"/")) {
			t.Errorf("mount left: %s", f[4])
		}
	}
	cgs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", d.Namespace, c.ID()))
	if v2 := filepath.Join("/sys/fs/cgroup", d.Namespace, c.ID()); isDir(v2) {
		cgs = append(cgs, v2)
	}
	for _, cg := range cgs {
		t.Errorf("cgroup left: %s", cg)
	}
}

// processGone: no such pid, or a zombie nobody reaped yet (its parent
// reaps it; it holds nothing).
func processGone(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(data)
	if i := strings.LastIndexByte(s, ')'); i > 0 && len(s) > i+2 {
		return s[i+2] == 'Z'
	}
	return false
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// TestShimKilledDuringCheckpoint: the shim dies (SIGKILL) while CRIU
// dumps. The checkpoint call fails, containerd reports the task exited
// and removes it, as for any dead shim, and nothing is left: criu (it
// dies with the shim), the container's processes, which the shim's
// cleanup kills, frozen or not, its cgroups, mounts, bundle.
func TestShimKilledDuringCheckpoint(t *testing.T) {
	d := daemon(t)
	ctx := testContext(t, d)
	c := newContainer(t, d, ctx, slowCounter, dataTmpfs)
	task, statusC, _ := startCounter(t, d, ctx, c)
	shim := shimOf(t, d, c)
	done := make(chan error, 1)
	go func() {
		_, err := task.Checkpoint(ctx, client.WithCheckpointImagePath(filepath.Join(t.TempDir(), "images")), exitAfterCheckpoint)
		done <- err
	}()
	criu := childNamed(t, shim, "criu", 20*time.Second)
	time.Sleep(300 * time.Millisecond) // into the dump
	if err := syscall.Kill(shim, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("the checkpoint succeeded although its shim was killed")
		}
		t.Logf("checkpoint: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the checkpoint call did not return after its shim was killed")
	}
	waitEnd(t, statusC, 20*time.Second)
	expectNothingLeft(t, d, ctx, c, criu, int(task.Pid()))
}

// TestCriuKilledDuringShimCheckpoint: criu dies (SIGKILL) in a dump
// through the shim. The checkpoint fails naming criu's death, and the
// container runs on, thawed: the counter goes on counting and the task
// stays running (the client paused it; it resumes it).
func TestCriuKilledDuringShimCheckpoint(t *testing.T) {
	d := daemon(t)
	ctx := testContext(t, d)
	c := newContainer(t, d, ctx, slowCounter, dataTmpfs)
	task, _, out := startCounter(t, d, ctx, c)
	shim := shimOf(t, d, c)
	done := make(chan error, 1)
	go func() {
		_, err := task.Checkpoint(ctx, client.WithCheckpointImagePath(filepath.Join(t.TempDir(), "images")), exitAfterCheckpoint)
		done <- err
	}()
	criu := childNamed(t, shim, "criu", 20*time.Second)
	time.Sleep(300 * time.Millisecond)
	if err := syscall.Kill(criu, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("the checkpoint succeeded although criu was killed")
		}
		t.Logf("checkpoint: %v", err)
		if !strings.Contains(strings.ToLower(err.Error()), "criu") {
			t.Errorf("the error does not name criu: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the checkpoint call did not return after criu was killed")
	}
	expectCounting(t, task, out)
}

// expectCounting checks that the task runs and its counter goes on.
func expectCounting(t *testing.T, task client.Task, out *syncBuffer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if st, err := task.Status(ctx); err != nil || st.Status != client.Running {
		t.Errorf("task is %v (%v); want running", st.Status, err)
	}
	n := lastNumber(out.String())
	deadline := time.Now().Add(10 * time.Second)
	for lastNumber(out.String()) <= n+3 {
		if time.Now().After(deadline) {
			t.Fatalf("the counter stopped at %d", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkpointToDir checkpoints c's running counter into a dir (the task
// exits and is deleted) and returns the dir.
func checkpointToDir(t *testing.T, d *harness.Daemon, ctx context.Context, c client.Container) string {
	t.Helper()
	task, statusC, _ := startCounter(t, d, ctx, c)
	return checkpointExit(t, ctx, task, statusC)
}

// checkpointExit checkpoints task into a new dir and lets it exit, as
// `ctr task checkpoint --image-path` does, then deletes it; it returns
// the dir.
func checkpointExit(t *testing.T, ctx context.Context, task client.Task, statusC <-chan client.ExitStatus) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "images")
	if _, err := task.Checkpoint(ctx, client.WithCheckpointImagePath(dir), exitAfterCheckpoint); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, statusC, 20*time.Second)
	if _, err := task.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestShimKilledDuringRestore: the shim dies (SIGKILL) while a restore is
// held between Create and Start, and while Start lets CRIU finish.
// containerd reports the task gone; nothing is left: criu, the restored
// tree, its cgroups, CRIU's mounts, runc's state, the bundle.
func TestShimKilledDuringRestore(t *testing.T) {
	d := daemon(t)
	ctx := testContext(t, d)
	src := newContainer(t, d, ctx, slowCounter, dataTmpfs)
	dir := checkpointToDir(t, d, ctx, src)
	for _, when := range []string{"held", "start"} {
		t.Run(when, func(t *testing.T) {
			c := newContainer(t, d, ctx, slowCounter, dataTmpfs)
			task, err := c.NewTask(ctx, streams(d, nil, &syncBuffer{}, nil, false), client.WithRestoreImagePath(dir))
			if err != nil {
				t.Fatal(err)
			}
			statusC, err := task.Wait(ctx)
			if err != nil {
				t.Fatal(err)
			}
			shim := shimOf(t, d, c)
			criu := childNamed(t, shim, "criu", time.Second)
			if when == "start" {
				go task.Start(ctx)
				time.Sleep(100 * time.Millisecond)
			}
			if err := syscall.Kill(shim, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			waitEnd(t, statusC, 20*time.Second)
			expectNothingLeft(t, d, ctx, c, criu, int(task.Pid()))
		})
	}
}

// smallTmpfs mounts a tmpfs of size bytes at a new dir, unmounted when
// the test ends.
func smallTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir
}

// TestCheckpointDiskFull: a shim checkpoint whose image dir, or image and
// work dir (where CRIU writes its log), is on a full disk fails with an
// error that says so (ENOSPC), and the task keeps running, thawed.
func TestCheckpointDiskFull(t *testing.T) {
	d := daemon(t)
	ctx := testContext(t, d)
	for _, full := range []string{"images", "images-and-work"} {
		t.Run(full, func(t *testing.T) {
			c := newContainer(t, d, ctx, counter)
			task, _, out := startCounter(t, d, ctx, c)
			fs := smallTmpfs(t, "64k")
			opts := []client.CheckpointTaskOpts{client.WithCheckpointImagePath(filepath.Join(fs, "images")), exitAfterCheckpoint}
			if full == "images-and-work" {
				opts = append(opts, func(info *client.CheckpointTaskInfo) error {
					info.Options.(*options.CheckpointOptions).WorkPath = filepath.Join(fs, "work")
					return nil
				})
			}
			_, err := task.Checkpoint(ctx, opts...)
			if err == nil {
				t.Fatal("a checkpoint onto a full disk succeeded")
			}
			t.Logf("checkpoint: %v", err)
			msg := strings.ToLower(err.Error())
			if !strings.Contains(msg, "no space left on device") && !strings.Contains(msg, "enospc") {
				t.Errorf("the error does not say the disk is full: %v", err)
			}
			expectCounting(t, task, out)
		})
	}
}
