package containerd_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/ckpt-dev/ckpt/integration/containerd/harness"
	"github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
)

// newRestartableContainer is newContainer for tests that restart
// containerd: a container is bound to the client that loaded it, so the
// cleanup loads it again from the client of the day.
func newRestartableContainer(t *testing.T, d *harness.Daemon, ctx context.Context, args []string) client.Container {
	t.Helper()
	id := fmt.Sprintf("%s-%d", regexp.MustCompile(`[^A-Za-z0-9]+`).ReplaceAllString(t.Name(), "-"), seq.Add(1))
	c, err := d.Client.NewContainer(ctx, id,
		client.WithNewSnapshot(id, d.Image),
		client.WithNewSpec(oci.WithImageConfig(d.Image), oci.WithProcessArgs(args...)),
		client.WithRuntime(harness.Runtime, nil),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if c, err := d.Client.LoadContainer(context.WithoutCancel(ctx), id); err == nil {
			removeContainer(t, d, c)
		}
	})
	return c
}

// restart restarts containerd and loads c and its task from the new
// client.
func restart(t *testing.T, d *harness.Daemon, ctx context.Context, sig syscall.Signal, id string) (client.Container, client.Task) {
	t.Helper()
	if err := d.Restart(ctx, sig); err != nil {
		t.Fatalf("restart containerd: %v", err)
	}
	c, err := d.Client.LoadContainer(ctx, id)
	if err != nil {
		t.Fatalf("load %s after the restart: %v", id, err)
	}
	task, err := c.Task(ctx, nil)
	if err != nil {
		t.Fatalf("task of %s after the restart: %v", id, err)
	}
	return c, task
}

// TestContainerdRestartManageTask: after containerd restarts (SIGTERM as
// systemd does, SIGKILL as a crash), a ckpt task is still managed: exec,
// checkpoint, restore and kill work, and the counter restored across a
// restart goes on.
func TestContainerdRestartManageTask(t *testing.T) {
	d := daemon(t)
	ctx := testContext(t, d)
	c := newRestartableContainer(t, d, ctx, counter)
	id := c.ID()
	_, _, before := startCounter(t, d, ctx, c)

	c, task := restart(t, d, ctx, syscall.SIGTERM, id)
	if st, err := task.Status(ctx); err != nil || st.Status != client.Running {
		t.Fatalf("after the restart the task is %v (%v); want running", st.Status, err)
	}
	execEcho(t, d, ctx, c, task, "exec-after-restart")

	statusC, err := task.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "images")
	if _, err := task.Checkpoint(ctx, client.WithCheckpointImagePath(dir), exitAfterCheckpoint); err != nil {
		t.Fatalf("checkpoint after the restart: %v", err)
	}
	waitStatus(t, statusC, 10*time.Second)
	if _, err := task.Delete(ctx); err != nil {
		t.Fatal(err)
	}

	if err := d.Restart(ctx, syscall.SIGKILL); err != nil {
		t.Fatalf("restart containerd: %v", err)
	}
	if c, err = d.Client.LoadContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	_, _, after := restoreTask(t, d, ctx, c, client.WithRestoreImagePath(dir))
	expectContinues(t, before, after)

	_, task = restart(t, d, ctx, syscall.SIGTERM, id)
	statusC, err = task.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Kill(ctx, syscall.SIGKILL); err != nil {
		t.Fatalf("kill after the restart: %v", err)
	}
	if st := waitStatus(t, statusC, 10*time.Second); st.ExitCode() != 137 {
		t.Errorf("killed task: exit %d, want 137", st.ExitCode())
	}
	if _, err := task.Delete(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestContainerdRestartHeldRestore is Docker 28's path with a restart in
// the middle: Create returns a restore held in CRIU, containerd restarts,
// and then Start finishes the restore (the counter goes on) or Delete
// ends it (nothing left).
func TestContainerdRestartHeldRestore(t *testing.T) {
	d := daemon(t)
	ctx := testContext(t, d)
	src := newRestartableContainer(t, d, ctx, counter)
	_, statusC, before := startCounter(t, d, ctx, src)
	task, err := src.Task(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := checkpointExit(t, ctx, task, statusC)

	for _, then := range []string{"start", "delete"} {
		t.Run(then, func(t *testing.T) {
			c := newRestartableContainer(t, d, ctx, counter)
			out := &syncBuffer{}
			held, err := c.NewTask(ctx, streams(d, nil, out, nil, false), client.WithRestoreImagePath(dir))
			if err != nil {
				t.Fatal(err)
			}
			pid := int(held.Pid())
			if pid == 0 {
				t.Fatal("restore: Create returned pid 0")
			}
			c, task := restart(t, d, ctx, syscall.SIGTERM, c.ID())
			if st, err := task.Status(ctx); err != nil || st.Status != client.Created {
				t.Fatalf("held restore after the restart: %v (%v); want created", st.Status, err)
			}
			switch then {
			case "start":
				statusC, err := task.Wait(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if err := task.Start(ctx); err != nil {
					t.Fatalf("start after the restart: %v", err)
				}
				expectContinues(t, before, out)
				if err := task.Kill(ctx, syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				waitStatus(t, statusC, 10*time.Second)
				if _, err := task.Delete(ctx); err != nil {
					t.Fatal(err)
				}
			case "delete":
				if _, err := d.Client.TaskService().Delete(ctx, &tasks.DeleteTaskRequest{ContainerID: c.ID()}); err != nil {
					t.Fatalf("delete after the restart: %v", err)
				}
			}
			if _, err := c.Task(ctx, nil); !errdefs.IsNotFound(err) {
				t.Errorf("task after delete: %v; want not found", err)
			}
			expectNothingLeft(t, d, ctx, c, pid)
		})
	}
}

// TestRestoreRemovesContainerdTempDir: containerd unpacks a checkpoint
// image into a ctrd-checkpoint dir for each restore and never removes it;
// the shim does, once CRIU is done (the restore finished or was aborted).
// A dir the client named is left alone.
func TestRestoreRemovesContainerdTempDir(t *testing.T) {
	d := daemon(t)
	ctx := testContext(t, d)
	c := newContainer(t, d, ctx, counter)
	task, statusC, before := startCounter(t, d, ctx, c)
	img, err := c.Checkpoint(ctx, "ckpt-test/"+c.ID()+":1", client.WithCheckpointTaskExit, client.WithCheckpointTask)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Client.ImageService().Delete(context.WithoutCancel(ctx), img.Name()) })
	waitStatus(t, statusC, 10*time.Second)
	if _, err := task.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	temps := func() []string {
		dirs, _ := filepath.Glob(filepath.Join(d.XDGRuntimeDir(), "ctrd-checkpoint*"))
		return dirs
	}
	if left := temps(); len(left) > 0 {
		t.Fatalf("ctrd-checkpoint dirs before the restore: %v", left)
	}

	// Aborted before Start.
	held, err := c.NewTask(ctx, streams(d, nil, &syncBuffer{}, nil, false), client.WithTaskCheckpoint(img))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(temps()); n != 1 {
		t.Fatalf("%d ctrd-checkpoint dirs while the restore is held, want 1 (containerd's)", n)
	}
	heldC, err := held.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := held.Kill(ctx, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, heldC, 10*time.Second)
	if _, err := held.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	if left := temps(); len(left) > 0 {
		t.Errorf("after an aborted restore: %v left", left)
	}

	// Finished.
	task, statusC, after := restoreTask(t, d, ctx, c, client.WithTaskCheckpoint(img))
	if left := temps(); len(left) > 0 {
		t.Errorf("after a restore: %v left", left)
	}
	expectContinues(t, before, after)
	if err := task.Kill(ctx, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, statusC, 10*time.Second)
	if _, err := task.Delete(ctx); err != nil {
		t.Fatal(err)
	}

	// A dir the client names is its own: kept.
	task, statusC, _ = startCounter(t, d, ctx, c)
	dir := filepath.Join(t.TempDir(), "ctrd-checkpoint1")
	if _, err := task.Checkpoint(ctx, client.WithCheckpointImagePath(dir), exitAfterCheckpoint); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, statusC, 10*time.Second)
	if _, err := task.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	task, statusC, _ = restoreTask(t, d, ctx, c, client.WithRestoreImagePath(dir))
	if _, err := os.Stat(filepath.Join(dir, "inventory.img")); err != nil {
		t.Errorf("the client's image dir lost its images: %v", err)
	}
	task.Kill(ctx, syscall.SIGKILL)
	waitStatus(t, statusC, 10*time.Second)
	task.Delete(ctx)
}
