package containerd_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"
)

// TestRestoreFailureDeletable: a restore from a damaged checkpoint fails
// with CRIU's reason, keeps CRIU's log next to the bundle, and leaves
// nothing that cannot be deleted.
func TestRestoreFailureDeletable(t *testing.T) {
	d := daemon(t)
	ctx := testContext(t, d)
	c := newContainer(t, d, ctx, counter)
	task, statusC, _ := startCounter(t, d, ctx, c)
	dir := checkpointExit(t, ctx, task, statusC)
	// Take the memory layouts away: CRIU fails after it has created the
	// tree. (Truncated pages images make CRIU 4.1 spin forever.)
	mms, _ := filepath.Glob(filepath.Join(dir, "mm-*.img"))
	if len(mms) == 0 {
		t.Fatalf("no mm image in %s", dir)
	}
	for _, p := range mms {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}

	nc := newContainer(t, d, ctx, counter)
	bundle := filepath.Join(d.Dir, "state", "io.containerd.runtime.v2.task", d.Namespace, nc.ID())
	ntask, err := nc.NewTask(ctx, streams(d, nil, &syncBuffer{}, nil, false), client.WithRestoreImagePath(dir))
	if err != nil {
		// Failed in Create: containerd has removed the task already.
		t.Logf("restore failed in Create: %v", err)
		if !strings.Contains(strings.ToLower(err.Error()), "criu") {
			t.Errorf("the error does not show CRIU's reason: %v", err)
		}
	} else {
		nstatusC, err := ntask.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		sctx, scancel := context.WithTimeout(ctx, 20*time.Second)
		err = ntask.Start(sctx)
		scancel()
		if err == nil {
			t.Fatal("a restore from damaged pages started")
		}
		t.Logf("restore failed in Start: %v", err)
		if !strings.Contains(strings.ToLower(err.Error()), "criu") {
			t.Errorf("the error does not show CRIU's reason: %v", err)
		}
		if _, err := os.Stat(filepath.Join(bundle, "criu-restore.log")); err != nil {
			t.Errorf("CRIU's log is not kept next to the bundle: %v", err)
		}
		waitStatus(t, nstatusC, 10*time.Second)
		if _, err := ntask.Delete(ctx); err != nil {
			t.Fatalf("delete the task of a failed restore: %v", err)
		}
	}
	if _, err := nc.Task(ctx, nil); err == nil {
		t.Error("a task remains after the failed restore")
	}
	if err := nc.Delete(ctx, client.WithSnapshotCleanup); err != nil {
		t.Fatalf("delete the container of a failed restore: %v", err)
	}
	if _, err := os.Stat(filepath.Join(d.RuncRoot, nc.ID())); err == nil {
		t.Error("runc state remains after the failed restore")
	}
}

// TestRestoreAbortBeforeStart: Kill or Delete of a restored task before
// Start makes CRIU kill the held tree; nothing is left.
func TestRestoreAbortBeforeStart(t *testing.T) {
	d := daemon(t)
	ctx := testContext(t, d)
	c := newContainer(t, d, ctx, counter)
	task, statusC, _ := startCounter(t, d, ctx, c)
	dir := checkpointExit(t, ctx, task, statusC)

	for _, how := range []string{"kill", "delete"} {
		t.Run(how, func(t *testing.T) {
			nc := newContainer(t, d, ctx, counter)
			ntask, err := nc.NewTask(ctx, streams(d, nil, &syncBuffer{}, nil, false), client.WithRestoreImagePath(dir))
			if err != nil {
				t.Fatal(err)
			}
			pid := int(ntask.Pid())
			if pid == 0 {
				t.Fatal("restore: Create returned pid 0")
			}
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
				t.Fatalf("the held root task %d does not exist: %v", pid, err)
			}
			if st, err := ntask.Status(ctx); err != nil || st.Status != client.Created {
				t.Fatalf("held restore: %v, %v; want created", st.Status, err)
			}
			switch how {
			case "kill":
				nstatusC, err := ntask.Wait(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if err := ntask.Kill(ctx, syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				waitStatus(t, nstatusC, 10*time.Second)
				if _, err := ntask.Delete(ctx); err != nil {
					t.Fatal(err)
				}
			case "delete":
				// The client refuses to delete a created task with a pid;
				// the daemon's API does not.
				if _, err := d.Client.TaskService().Delete(ctx, &tasks.DeleteTaskRequest{ContainerID: nc.ID()}); err != nil {
					t.Fatal(err)
				}
			}
			deadline := time.Now().Add(10 * time.Second)
			for {
				if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); os.IsNotExist(err) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the aborted restore's root task %d still exists", pid)
				}
				time.Sleep(20 * time.Millisecond)
			}
			if _, err := os.Stat(filepath.Join(d.RuncRoot, nc.ID())); err == nil {
				t.Error("runc state remains after the aborted restore")
			}
			if _, err := nc.Task(ctx, nil); !errdefs.IsNotFound(err) {
				t.Errorf("task after the aborted restore: %v; want not found", err)
			}
		})
	}
}
