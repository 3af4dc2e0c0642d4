package migrate_test

import (
	"context"
	"testing"

	tasks "github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/containerd/typeurl/v2"
)

// lazyOptions stands for options of a type of ckpt's own.
type lazyOptions struct {
	PageServer string `json:"page_server"`
}

func init() { typeurl.Register(&lazyOptions{}, "io.ckpt.test.v1", "LazyOptions") }

// TestCheckpointOptionsOfOtherType: containerd 2.x refuses checkpoint
// options of any type but runc's CheckpointOptions before the shim sees
// them, so ckpt's post-copy options cannot travel in
// CheckpointTaskRequest.Options and go in a task Update's annotations
// instead (docs/DESIGN.md, "Migration between hosts"). The task is not
// touched. When a containerd passes them on, this test fails and the
// design can use them.
func TestCheckpointOptionsOfOtherType(t *testing.T) {
	h := hosts(t)
	c, task, out := runningCounter(t, h)
	opts, err := typeurl.MarshalAnyToProto(&lazyOptions{PageServer: h.Net.SrcIP + ":27027"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := h.Src.Context(context.Background())
	_, err = h.Src.Client.TaskService().Checkpoint(ctx, &tasks.CheckpointTaskRequest{ContainerID: c.ID(), Options: opts})
	if err == nil {
		t.Fatal("containerd passed ckpt's own checkpoint options on: the shim could take them there")
	}
	t.Logf("containerd: %v", err)
	expectSourceRuns(t, h, c, out, task.Pid(), true)
}
