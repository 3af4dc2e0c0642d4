package containerd_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ckpt-dev/ckpt/integration/containerd/harness"
	ckptshim "github.com/ckpt-dev/ckpt/runtime/shim"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/oci"
	cdshim "github.com/containerd/containerd/v2/pkg/shim"
)

// TestShimGroup: containers that carry one pod's sandbox id, created
// without containerd's sandbox API (so containerd runs `shim start` for
// each, as for pods made by containerd 1.x), are served by one shim,
// named by the group. Two of them checkpoint at the same time; killing
// one, or a failed restore into the group, leaves the other counting; two
// restores into the group at the same time continue their counts; the
// shim and its socket go with the last container.
func TestShimGroup(t *testing.T) {
	d := daemon(t)
	ctx := testContext(t, d)
	group := fmt.Sprintf("ckpt-pod-%d-%d", os.Getpid(), seq.Add(1))
	inPod := oci.WithAnnotations(map[string]string{ckptshim.SandboxIDAnnotation: group})
	a := newContainer(t, d, ctx, counter, inPod)
	b := newContainer(t, d, ctx, counter, inPod)
	aTask, aStatus, aOut := startCounter(t, d, ctx, a)
	bTask, _, bOut := startCounter(t, d, ctx, b)
	shim := groupShim(t, d, group, aTask, bTask)
	socket, err := cdshim.SocketAddress(ctx, d.Address, group, false)
	if err != nil {
		t.Fatal(err)
	}
	socket = strings.TrimPrefix(socket, "unix://")
	if _, err := os.Stat(socket); err != nil {
		t.Fatalf("the group's socket: %v", err)
	}

	// 1. a and b checkpoint at once, and both count on.
	dirs := map[string]string{a.ID(): filepath.Join(t.TempDir(), "a"), b.ID(): filepath.Join(t.TempDir(), "b")}
	beforeB := lastNumber(bOut.String())
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, task := range []client.Task{aTask, bTask} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = task.Checkpoint(ctx, client.WithCheckpointImagePath(dirs[task.ID()]))
		}()
	}
	wg.Wait()
	afterB := lastNumber(bOut.String())
	for i, out := range []*syncBuffer{aOut, bOut} {
		if errs[i] != nil {
			t.Fatalf("concurrent checkpoint %d: %v", i, errs[i])
		}
		countsOn(t, out)
	}

	// 2. a is killed: b counts on; a's Delete (containerd then asks the
	// shim to shut down) leaves the shim to b.
	if err := aTask.Kill(ctx, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if st := waitStatus(t, aStatus, 10*time.Second); st.ExitCode() != 137 {
		t.Fatalf("a killed: exit %d, want 137", st.ExitCode())
	}
	countsOn(t, bOut)
	if _, err := aTask.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	countsOn(t, bOut)
	if now := groupShim(t, d, group, bTask); now != shim {
		t.Fatalf("after a's delete the group's shim is %d, was %d", now, shim)
	}

	// 3. A restore from b's images without their memory layouts fails
	// (CRIU has made the tree by then); b counts on.
	damaged := filepath.Join(t.TempDir(), "damaged")
	if err := os.CopyFS(damaged, os.DirFS(dirs[b.ID()])); err != nil {
		t.Fatal(err)
	}
	mms, _ := filepath.Glob(filepath.Join(damaged, "mm-*.img"))
	if len(mms) == 0 {
		t.Fatalf("no mm image in %s", damaged)
	}
	for _, p := range mms {
		os.Remove(p)
	}
	f := newContainer(t, d, ctx, counter, inPod)
	fTask, err := f.NewTask(ctx, streams(d, nil, &syncBuffer{}, nil, false), client.WithRestoreImagePath(damaged))
	if err == nil {
		fStatus, err := fTask.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := fTask.Start(ctx); err == nil {
			t.Fatal("a restore without memory layouts started")
		}
		waitStatus(t, fStatus, 10*time.Second)
		if _, err := fTask.Delete(ctx); err != nil {
			t.Fatalf("delete the failed restore's task: %v", err)
		}
	}
	countsOn(t, bOut)
	if now := groupShim(t, d, group, bTask); now != shim {
		t.Fatalf("after the failed restore the group's shim is %d, was %d", now, shim)
	}

	// 4. a's and b's images restore into the group at the same time; each
	// count goes on from its checkpoint, and b goes on too.
	type restored struct {
		task client.Task
		out  *syncBuffer
		err  error
	}
	rs := make([]restored, 2)
	for i, src := range []client.Container{a, b} {
		wg.Add(1)
		r := newContainer(t, d, ctx, counter, inPod)
		go func() {
			defer wg.Done()
			rs[i].out = &syncBuffer{}
			rs[i].task, rs[i].err = r.NewTask(ctx, streams(d, nil, rs[i].out, nil, false), client.WithRestoreImagePath(dirs[src.ID()]))
			if rs[i].err == nil {
				rs[i].err = rs[i].task.Start(ctx)
			}
		}()
	}
	wg.Wait()
	for i, r := range rs {
		if r.err != nil {
			t.Fatalf("concurrent restore %d into the group: %v", i, r.err)
		}
		countsOn(t, r.out)
	}
	if first := firstNumber(rs[1].out.String()); first <= beforeB || first > afterB+1 {
		t.Errorf("b's restored counter starts at %d; b was checkpointed between %d and %d", first, beforeB, afterB)
	}
	countsOn(t, bOut)
	if now := groupShim(t, d, group, bTask, rs[0].task, rs[1].task); now != shim {
		t.Fatalf("the restored tasks are not served by the group's shim %d: %d", shim, now)
	}

	// 5. The shim and its socket go with the group's last task.
	for _, task := range []client.Task{bTask, rs[0].task, rs[1].task} {
		if _, err := task.Delete(ctx, client.WithProcessKill); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for syscall.Kill(shim, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("the group's shim %d runs on after its last task's delete", shim)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := os.Stat(socket); !os.IsNotExist(err) {
		t.Errorf("the group's socket %s is left (stat: %v)", socket, err)
	}
}

// groupShim checks that one shim, named by the group, serves the tasks:
// each init is its child (the shim is a subreaper), and no shim is named
// after a task. It returns the shim's pid.
func groupShim(t *testing.T, d *harness.Daemon, group string, tasks ...client.Task) int {
	t.Helper()
	shims := harness.Shims(d.Address)
	pid, ok := shims[group]
	if !ok {
		t.Fatalf("no shim named after the group %s; shims: %v", group, shims)
	}
	for _, task := range tasks {
		if other, ok := shims[task.ID()]; ok {
			t.Fatalf("task %s has a shim of its own (%d); shims: %v", task.ID(), other, shims)
		}
		if parent := parentOf(t, int(task.Pid())); parent != pid {
			t.Fatalf("task %s's init %d is a child of %d, not of the group's shim %d", task.ID(), task.Pid(), parent, pid)
		}
	}
	return pid
}

func parentOf(t *testing.T, pid int) int {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "PPid:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("/proc/%d/status has no PPid", pid)
	return 0
}

// countsOn checks that a counter's output grows by 10 more counts.
func countsOn(t *testing.T, out *syncBuffer) {
	t.Helper()
	want := lastNumber(out.String()) + 10
	deadline := time.Now().Add(10 * time.Second)
	for lastNumber(out.String()) < want {
		if time.Now().After(deadline) {
			t.Fatalf("the counter stopped at %d (want %d)", lastNumber(out.String()), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRuncGroupAnnotation: containers that carry containerd's runc shim
// grouping annotation (io.containerd.runc.v2.group), outside any pod,
// share one ckpt shim as they would share a runc shim; each checkpoints
// and restores on its own while the other counts on.
func TestRuncGroupAnnotation(t *testing.T) {
	d := daemon(t)
	ctx := testContext(t, d)
	group := fmt.Sprintf("ckpt-group-%d-%d", os.Getpid(), seq.Add(1))
	inGroup := oci.WithAnnotations(map[string]string{ckptshim.GroupAnnotation: group})
	a := newContainer(t, d, ctx, counter, inGroup)
	b := newContainer(t, d, ctx, counter, inGroup)
	aTask, aStatus, aOut := startCounter(t, d, ctx, a)
	bTask, _, bOut := startCounter(t, d, ctx, b)
	groupShim(t, d, group, aTask, bTask)

	dir := checkpointExit(t, ctx, aTask, aStatus)
	beforeB := lastNumber(bOut.String())
	waitOutput(t, bOut, fmt.Sprintf("\n%d\n", beforeB+3), 10*time.Second)
	aTask, _, after := restoreTask(t, d, ctx, a, client.WithRestoreImagePath(dir))
	expectContinues(t, aOut, after)
	groupShim(t, d, group, aTask, bTask)
}
