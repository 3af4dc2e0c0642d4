package containerd_test

import (
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// TestTaskOOM: a container that outgrows its memory limit is killed by
// the kernel, and containerd hears it from the shim (/tasks/oom before
// /tasks/exit, status 137), as clients such as Docker (OOMKilled) and the
// CRI (reason OOMKilled) expect: for a started task and for a restored
// one, whose cgroup is made by the restore.
func TestTaskOOM(t *testing.T) {
	d := daemon(t)
	ctx := testContext(t, d)
	bin := buildMemsum(t)
	// It counts (a checkpoint needs a running task) until SIGUSR1, then
	// takes 256 MiB under a 32 MiB limit.
	script := "trap 'exec /memsum 256' USR1; i=0; while :; do i=$((i+1)); echo $i; sleep 0.02; done"
	opts := []oci.SpecOpts{
		oci.WithMemoryLimit(32 << 20),
		oci.WithMounts([]specs.Mount{{Type: "bind", Source: bin, Destination: "/memsum", Options: []string{"rbind", "ro"}}}),
	}
	for _, restored := range []bool{false, true} {
		name := map[bool]string{false: "started", true: "restored"}[restored]
		t.Run(name, func(t *testing.T) {
			c := newContainer(t, d, ctx, []string{"sh", "-c", script}, opts...)
			task, statusC, _ := startCounter(t, d, ctx, c)
			if restored {
				dir := checkpointExit(t, ctx, task, statusC)
				task, statusC, _ = restoreTask(t, d, ctx, c, client.WithRestoreImagePath(dir))
			}
			topics := watchEvents(t, d, ctx, c.ID())
			if err := task.Kill(ctx, syscall.SIGUSR1); err != nil {
				t.Fatal(err)
			}
			st := waitStatus(t, statusC, 30*time.Second)
			if st.ExitCode() != 128+uint32(syscall.SIGKILL) {
				t.Fatalf("exit status %d, want 137 (killed by the OOM killer)", st.ExitCode())
			}
			topics.expect(t, []string{"/tasks/oom", "/tasks/exit"}, 10*time.Second)
			if _, err := task.Delete(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}
