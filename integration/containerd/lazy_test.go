package containerd_test

import (
	"context"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

var memSum = regexp.MustCompile(`(?m)^sum (\d+) ([0-9a-f]{64})$`)

// waitSum waits for memsum's k-th checksum line in out.
func waitSum(t *testing.T, out *syncBuffer, k string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, m := range memSum.FindAllStringSubmatch(out.String(), -1) {
			if m[1] == k {
				return m[2]
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no checksum %s in 30s; output: %q", k, lastLines(out.String(), 5))
	return ""
}

// TestLazyRestoreThroughShim: a container holding 256 MiB of known data
// is checkpointed through containerd and restored with the annotation
// io.ckpt.restore.lazy=true: the shim restores it with lazy pages, and the
// checksum the restored container computes of its memory matches.
func TestLazyRestoreThroughShim(t *testing.T) {
	d := daemon(t)
	ctx := testContext(t, d)
	bin := buildMemsum(t)
	c := newContainer(t, d, ctx, []string{"/memsum", "256"}, oci.WithMounts([]specs.Mount{
		{Type: "bind", Source: bin, Destination: "/memsum", Options: []string{"rbind", "ro"}},
	}))
	before := &syncBuffer{}
	task, statusC := startTask(t, ctx, c, streams(d, nil, before, nil, false))
	want := waitSum(t, before, "1")

	c, checkpoint := recreateFromCheckpoint(t, d, ctx, c, task, statusC, "lazy")
	spec, err := c.Spec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	err = c.Update(ctx, func(ctx context.Context, cl *client.Client, cr *containers.Container) error {
		return client.WithSpec(spec, oci.WithAnnotations(map[string]string{"io.ckpt.restore.lazy": "true"}))(ctx, cl, cr)
	})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	task, statusC, after := restoreTask(t, d, ctx, c, client.WithTaskCheckpoint(checkpoint))
	t.Logf("restored task started after %s", time.Since(start))
	if err := task.Kill(ctx, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	if got := waitSum(t, after, "2"); got != want {
		t.Fatalf("checksum after lazy restore %s, want %s", got, want)
	}
	// The daemon exits once it has delivered the last page; the shim logs it.
	deadline := time.Now().Add(30 * time.Second)
	for !regexp.MustCompile(`lazy restore: every page is in`).MatchString(d.Log()) {
		if time.Now().After(deadline) {
			t.Fatalf("the shim did not report a lazy restore's last page in 30s (containerd log: %s)", lastLines(d.Log(), 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
	task.Kill(ctx, syscall.SIGKILL)
	waitStatus(t, statusC, 10*time.Second)
	task.Delete(ctx)
}
