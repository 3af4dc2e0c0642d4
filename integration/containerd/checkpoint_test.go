package containerd_test

import (
	"context"
	"io"
	"os/exec"
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
)

// counter prints 1, 2, 3, ... every 20ms; the count lives in the shell's
// memory, so a restored shell continues where it was.
var counter = []string{"sh", "-c", "i=0; while :; do i=$((i+1)); echo $i; sleep 0.02; done"}

// startCounter runs the counter and waits until it has counted a bit.
func startCounter(t *testing.T, d *harness.Daemon, ctx context.Context, c client.Container) (client.Task, <-chan client.ExitStatus, *syncBuffer) {
	t.Helper()
	out := &syncBuffer{}
	task, statusC := startTask(t, ctx, c, streams(d, nil, out, nil, false))
	waitOutput(t, out, "\n5\n", 10*time.Second)
	return task, statusC, out
}

// restoreTask creates a task from a checkpoint image and starts it.
func restoreTask(t *testing.T, d *harness.Daemon, ctx context.Context, c client.Container, opt client.NewTaskOpts) (client.Task, <-chan client.ExitStatus, *syncBuffer) {
	t.Helper()
	out := &syncBuffer{}
	task, statusC := startTask(t, ctx, c, streams(d, nil, out, nil, false), opt)
	if task.Pid() == 0 {
		t.Error("restore: Create returned pid 0 (CRIU should be held with the root task's pid)")
	}
	return task, statusC, out
}

// expectContinues checks that the restored counter goes on from where the
// checkpointed one was (not from 1).
func expectContinues(t *testing.T, before, after *syncBuffer) {
	t.Helper()
	last := lastNumber(before.String())
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(after.String(), "\n") < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("the restored counter printed %q in 10s", after.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	first := firstNumber(after.String())
	if first <= last {
		t.Fatalf("restored counter starts at %d; the checkpointed one had reached %d", first, last)
	}
}

func lastNumber(s string) int {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	n, _ := strconv.Atoi(lines[len(lines)-1])
	return n
}

func firstNumber(s string) int {
	n, _ := strconv.Atoi(strings.SplitN(s, "\n", 2)[0])
	return n
}

// exitAfterCheckpoint is the task checkpoint option "exit" (ctr's default
// is to leave the task running).
func exitAfterCheckpoint(info *client.CheckpointTaskInfo) error {
	if info.Options == nil {
		info.Options = &options.CheckpointOptions{}
	}
	info.Options.(*options.CheckpointOptions).Exit = true
	return nil
}

// TestCheckpointRestore: containerd's flow (container.Checkpoint with the
// task, runtime and rw layer; client.Restore; NewTask from the
// checkpoint) under the same id; the restored task continues, and exec
// and kill work on it.
func TestCheckpointRestore(t *testing.T) {
	d := daemon(t)
	ctx := testContext(t, d)
	c := newContainer(t, d, ctx, counter)
	task, statusC, before := startCounter(t, d, ctx, c)

	c, checkpoint := recreateFromCheckpoint(t, d, ctx, c, task, statusC, "1")
	task, statusC, after := restoreTask(t, d, ctx, c, client.WithTaskCheckpoint(checkpoint))
	expectContinues(t, before, after)

	execEcho(t, d, ctx, c, task, "exec-after-restore")

	if err := task.Kill(ctx, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if st := waitStatus(t, statusC, 10*time.Second); st.ExitCode() != 137 {
		t.Errorf("killed restored task: exit %d, want 137", st.ExitCode())
	}
	if _, err := task.Delete(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestCheckpointRestoreNewContainer restores a checkpoint into a new
// container with another id while the checkpointed one still exists.
func TestCheckpointRestoreNewContainer(t *testing.T) {
	d := daemon(t)
	ctx := testContext(t, d)
	c := newContainer(t, d, ctx, counter)
	task, statusC, before := startCounter(t, d, ctx, c)
	checkpoint, err := c.Checkpoint(ctx, "ckpt-test/"+c.ID()+":1",
		client.WithCheckpointRuntime, client.WithCheckpointRW, client.WithCheckpointTaskExit, client.WithCheckpointTask)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Client.ImageService().Delete(context.WithoutCancel(ctx), checkpoint.Name()) })
	waitStatus(t, statusC, 10*time.Second)
	if _, err := task.Delete(ctx); err != nil {
		t.Fatal(err)
	}

	nc, err := d.Client.Restore(ctx, c.ID()+"-new", checkpoint,
		client.WithRestoreImage, client.WithRestoreSpec, client.WithRestoreRuntime, client.WithRestoreRW)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeContainer(t, d, nc) })
	ntask, nstatusC, after := restoreTask(t, d, ctx, nc, client.WithTaskCheckpoint(checkpoint))
	expectContinues(t, before, after)
	if err := ntask.Kill(ctx, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, nstatusC, 10*time.Second)
	if _, err := ntask.Delete(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestCheckpointLeaveRunning: without exit the task keeps running (and
// counting) after the checkpoint.
func TestCheckpointLeaveRunning(t *testing.T) {
	d := daemon(t)
	ctx := testContext(t, d)
	c := newContainer(t, d, ctx, counter)
	task, statusC, out := startCounter(t, d, ctx, c)
	checkpoint, err := c.Checkpoint(ctx, "ckpt-test/"+c.ID()+":1",
		client.WithCheckpointRuntime, client.WithCheckpointRW, client.WithCheckpointTask)
	if err != nil {
		t.Fatal(err)
	}
	d.Client.ImageService().Delete(ctx, checkpoint.Name())
	st, err := task.Status(ctx)
	if err != nil || st.Status != client.Running {
		t.Fatalf("after a leave-running checkpoint: %v, %v; want running", st.Status, err)
	}
	n := lastNumber(out.String())
	deadline := time.Now().Add(10 * time.Second)
	for lastNumber(out.String()) <= n+3 {
		if time.Now().After(deadline) {
			t.Fatalf("the task stopped counting after a leave-running checkpoint (at %d)", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := task.Kill(ctx, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, statusC, 10*time.Second)
	if _, err := task.Delete(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestCheckpointImagePath checkpoints into a directory the client names
// (CheckpointOptions.ImagePath) and restores from it (Options.CriuImagePath).
func TestCheckpointImagePath(t *testing.T) {
	d := daemon(t)
	ctx := testContext(t, d)
	c := newContainer(t, d, ctx, counter)
	topics := watchEvents(t, d, ctx, c.ID())
	task, statusC, before := startCounter(t, d, ctx, c)
	dir := checkpointExit(t, ctx, task, statusC)
	topics.expect(t, []string{"/tasks/checkpointed", "/tasks/exit"}, 10*time.Second)
	if imgs, _ := filepath.Glob(filepath.Join(dir, "*.img")); len(imgs) == 0 {
		t.Fatalf("no CRIU image in %s", dir)
	}

	nc := newContainer(t, d, ctx, counter)
	ntask, nstatusC, after := restoreTask(t, d, ctx, nc, client.WithRestoreImagePath(dir))
	expectContinues(t, before, after)
	if err := ntask.Kill(ctx, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, nstatusC, 10*time.Second)
	if _, err := ntask.Delete(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestCheckpointPaused checkpoints a paused task (the client then does not
// pause it itself) and restores it.
func TestCheckpointPaused(t *testing.T) {
	d := daemon(t)
	ctx := testContext(t, d)
	c := newContainer(t, d, ctx, counter)
	task, statusC, before := startCounter(t, d, ctx, c)
	if err := task.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	dir := checkpointExit(t, ctx, task, statusC)
	nc := newContainer(t, d, ctx, counter)
	ntask, nstatusC, after := restoreTask(t, d, ctx, nc, client.WithRestoreImagePath(dir))
	expectContinues(t, before, after)
	if st, err := ntask.Status(ctx); err != nil || st.Status != client.Running {
		t.Errorf("restored from a paused checkpoint: %v, %v; want running", st.Status, err)
	}
	if err := ntask.Kill(ctx, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, nstatusC, 10*time.Second)
	if _, err := ntask.Delete(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestCheckpointRestorePTY: a terminal task's shell keeps its state
// across checkpoint/restore, answers typed input on the restored pty, and
// ResizePty reaches it.
func TestCheckpointRestorePTY(t *testing.T) {
	d := daemon(t)
	ctx := testContext(t, d)
	_, task, statusC, typed, out := startTTYShell(t, d, ctx)
	if err := task.Resize(ctx, 61, 21); err != nil {
		t.Fatal(err)
	}
	typeLine(t, typed, "x=41; echo set-$x; stty size")
	waitOutput(t, out, "set-41", 10*time.Second)
	waitOutput(t, out, "21 61", 10*time.Second)

	dir := checkpointExit(t, ctx, task, statusC)

	nc := newContainer(t, d, ctx, []string{"sh"}, oci.WithTTY)
	nstdin, ntyped := io.Pipe()
	defer ntyped.Close()
	nout := &syncBuffer{}
	ntask, err := nc.NewTask(ctx, streams(d, nstdin, nout, nil, true), client.WithRestoreImagePath(dir))
	if err != nil {
		t.Fatal(err)
	}
	nstatusC, err := ntask.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := ntask.Start(ctx); err != nil {
		t.Fatal(err)
	}
	// The checkpoint recorded the window size; the restored pty has it.
	typeLine(t, ntyped, "echo $((x+1))-restored; stty size")
	waitOutput(t, nout, "42-restored", 10*time.Second)
	waitOutput(t, nout, "21 61", 10*time.Second)
	if err := ntask.Resize(ctx, 77, 33); err != nil {
		t.Fatal(err)
	}
	typeLine(t, ntyped, "stty size")
	waitOutput(t, nout, "33 77", 10*time.Second)
	typeLine(t, ntyped, "exit 3")
	if st := waitStatus(t, nstatusC, 10*time.Second); st.ExitCode() != 3 {
		t.Errorf("restored shell: exit %d, want 3", st.ExitCode())
	}
	if _, err := ntask.Delete(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestCheckpointNoOptions: no checkpoint options at all (Docker with a
// runtime other than runc) means exit, Docker's default.
func TestCheckpointNoOptions(t *testing.T) {
	d := daemon(t)
	ctx := testContext(t, d)
	c := newContainer(t, d, ctx, counter)
	task, statusC, _ := startCounter(t, d, ctx, c)
	img, err := task.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d.Client.ImageService().Delete(ctx, img.Name())
	if st := waitStatus(t, statusC, 10*time.Second); st.ExitCode() == 0 {
		t.Errorf("checkpointed task exited with 0; want a kill status")
	}
	if _, err := task.Delete(ctx); err != nil {
		t.Fatal(err)
	}
}

// recreateFromCheckpoint checkpoints task into an image tagged tag (the
// task exits), deletes the task and the container, and makes the
// container again from the checkpoint (its image, spec, runtime and
// writable layer), as `ctr container restore` does; the task is left to
// the caller.
func recreateFromCheckpoint(t *testing.T, d *harness.Daemon, ctx context.Context, c client.Container, task client.Task, statusC <-chan client.ExitStatus, tag string) (client.Container, client.Image) {
	t.Helper()
	checkpoint, err := c.Checkpoint(ctx, "ckpt-test/"+c.ID()+":"+tag,
		client.WithCheckpointRuntime, client.WithCheckpointRW, client.WithCheckpointTaskExit, client.WithCheckpointTask)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Client.ImageService().Delete(context.WithoutCancel(ctx), checkpoint.Name()) })
	waitStatus(t, statusC, 10*time.Second)
	if _, err := task.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	id := c.ID()
	if err := c.Delete(ctx, client.WithSnapshotCleanup); err != nil {
		t.Fatal(err)
	}
	c, err = d.Client.Restore(ctx, id, checkpoint,
		client.WithRestoreImage, client.WithRestoreSpec, client.WithRestoreRuntime, client.WithRestoreRW)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeContainer(t, d, c) })
	return c, checkpoint
}

// buildMemsum builds integration/internal/memsum (the workload that
// checks its memory) for bind-mounting into a container.
func buildMemsum(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "memsum")
	if out, err := exec.Command("go", "build", "-o", bin, "../internal/memsum").CombinedOutput(); err != nil {
		t.Fatalf("build memsum: %v\n%s", err, out)
	}
	return bin
}
