package containerd_test

import (
	"context"
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/ckpt-dev/ckpt/runtime/policy"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// freeLoopbackPort is 127.0.0.1:PORT with a port free now.
func freeLoopbackPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestLazyCheckpointAbortedThroughShim: a task Update makes the next
// checkpoint lazy; containerd's checkpoint returns at status-ready with the
// task frozen (its checksum loop stops); a second Update aborts the
// transfer, and the task runs on: the same process, its memory whole.
func TestLazyCheckpointAbortedThroughShim(t *testing.T) {
	d := daemon(t)
	ctx := testContext(t, d)
	bin := buildMemsum(t)
	c := newContainer(t, d, ctx, []string{"/memsum", "64"}, oci.WithMounts([]specs.Mount{
		{Type: "bind", Source: bin, Destination: "/memsum", Options: []string{"rbind", "ro"}},
	}))
	out := &syncBuffer{}
	task, _ := startTask(t, ctx, c, streams(d, nil, out, nil, false))
	want := waitSum(t, out, "1")
	pid := task.Pid()

	lazy := policy.Lazy{PageServer: freeLoopbackPort(t), TransferTimeout: time.Minute}
	if err := task.Update(ctx, client.WithAnnotations(lazy.Annotations())); err != nil {
		t.Fatal(err)
	}
	img, err := c.Checkpoint(ctx, fmt.Sprintf("ckpt-test/%s:lazy", c.ID()),
		client.WithCheckpointRuntime, client.WithCheckpointRW, client.WithCheckpointTaskExit, client.WithCheckpointTask)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Client.ImageService().Delete(context.WithoutCancel(ctx), img.Name()) })
	if err := task.Update(ctx, client.WithAnnotations(map[string]string{policy.TransferAnnotation: policy.TransferAbort})); err != nil {
		t.Fatal(err)
	}
	st, err := task.Status(ctx)
	if err != nil || st.Status != client.Running {
		t.Fatalf("after the abort the task is %v (%v), want running", st.Status, err)
	}
	if task.Pid() != pid {
		t.Fatalf("pid %d, was %d", task.Pid(), pid)
	}
	if err := task.Kill(ctx, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	if got := waitSum(t, out, "2"); got != want {
		t.Fatalf("checksum after the abort %s, was %s", got, want)
	}
}
