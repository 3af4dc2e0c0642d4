// Package containerd_test runs ckpt's shim (io.containerd.ckpt.v2) under a
// private containerd through containerd's Go client: tasks, execs,
// terminals, pause/resume, and checkpoint/restore as containerd's own
// integration tests do them.
package containerd_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ckpt-dev/ckpt/integration/containerd/harness"
	"github.com/ckpt-dev/ckpt/integration/internal/testutil"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
)

var shared struct {
	once sync.Once
	d    *harness.Daemon
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.d != nil {
		if err := shared.d.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stop containerd:", err)
		}
	}
	os.Exit(code)
}

// daemon is the package's containerd, started by the first test that
// needs it and stopped by TestMain.
func daemon(t *testing.T) *harness.Daemon {
	t.Helper()
	testutil.Require(t, "root", "containerd", "runc", "criu")
	shared.once.Do(func() {
		rootfs, err := os.MkdirTemp("", "ckpt-busybox")
		if err != nil {
			shared.err = err
			return
		}
		defer os.RemoveAll(rootfs)
		testutil.Rootfs(t, rootfs)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		shared.d, shared.err = harness.Start(ctx, rootfs)
	})
	if shared.err != nil {
		t.Fatalf("private containerd: %v", shared.err)
	}
	if shared.d == nil {
		t.Fatal("private containerd did not start (see the first test's failure)")
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("containerd log (tail):\n%s", lastLines(shared.d.Log(), 60))
		}
	})
	return shared.d
}

// testContext is ctx in the daemon's namespace, bounded so that a hung
// call fails the test instead of the whole run.
func testContext(t *testing.T, d *harness.Daemon) context.Context {
	ctx, cancel := context.WithTimeout(d.Context(context.Background()), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

var seq atomic.Int64

// newContainer creates a busybox container on ckpt's runtime; it is
// deleted (task included) when the test ends.
func newContainer(t *testing.T, d *harness.Daemon, ctx context.Context, args []string, opts ...oci.SpecOpts) client.Container {
	t.Helper()
	return newContainerWithOptions(t, d, ctx, nil, args, opts...)
}

// newContainerWithOptions is newContainer with the runtime's options
// (runc's options.Options).
func newContainerWithOptions(t *testing.T, d *harness.Daemon, ctx context.Context, runtimeOpts any, args []string, opts ...oci.SpecOpts) client.Container {
	t.Helper()
	id := fmt.Sprintf("%s-%d", regexp.MustCompile(`[^A-Za-z0-9]+`).ReplaceAllString(t.Name(), "-"), seq.Add(1))
	specOpts := append([]oci.SpecOpts{oci.WithImageConfig(d.Image), oci.WithProcessArgs(args...)}, opts...)
	c, err := d.Client.NewContainer(ctx, id,
		client.WithNewSnapshot(id, d.Image),
		client.WithNewSpec(specOpts...),
		client.WithRuntime(harness.Runtime, runtimeOpts),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeContainer(t, d, c) })
	return c
}

func removeContainer(t *testing.T, d *harness.Daemon, c client.Container) {
	ctx, cancel := context.WithTimeout(d.Context(context.Background()), time.Minute)
	defer cancel()
	if task, err := c.Task(ctx, nil); err == nil {
		task.Kill(ctx, syscall.SIGKILL, client.WithKillAll)
		if _, err := task.Delete(ctx, client.WithProcessKill); err != nil {
			t.Errorf("cleanup: delete task %s: %v", c.ID(), err)
		}
	}
	if err := c.Delete(ctx, client.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		t.Errorf("cleanup: delete container %s: %v", c.ID(), err)
	}
}

// streams is a cio creator for the given streams (pass untyped nil for
// none), FIFOs under the daemon's dir.
// startTask creates c's task (NewTask), waits for its exit (Wait) and
// starts it, failing the test on any error.
func startTask(t *testing.T, ctx context.Context, c client.Container, ioc cio.Creator, opts ...client.NewTaskOpts) (client.Task, <-chan client.ExitStatus) {
	t.Helper()
	task, err := c.NewTask(ctx, ioc, opts...)
	if err != nil {
		t.Fatal(err)
	}
	statusC, err := task.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return task, statusC
}

func streams(d *harness.Daemon, stdin io.Reader, stdout, stderr io.Writer, terminal bool) cio.Creator {
	opts := []cio.Opt{cio.WithFIFODir(filepath.Join(d.Dir, "fifo")), cio.WithStreams(stdin, stdout, stderr)}
	if terminal {
		opts = append(opts, cio.WithTerminal)
	}
	return cio.NewCreator(opts...)
}

// syncBuffer collects a process's output.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitOutput waits until the output contains want.
func waitOutput(t *testing.T, b *syncBuffer, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(b.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("output has no %q after %s; it is:\n%q", want, timeout, b.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitStatus waits for an exit.
func waitStatus(t *testing.T, ch <-chan client.ExitStatus, timeout time.Duration) client.ExitStatus {
	t.Helper()
	select {
	case st := <-ch:
		if err := st.Error(); err != nil {
			t.Fatalf("wait: %v", err)
		}
		return st
	case <-time.After(timeout):
		t.Fatalf("no exit after %s", timeout)
	}
	panic("unreachable")
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// startTTYShell runs a shell on a terminal and starts it; typed is its
// keyboard (closed at the end of the test), out what the terminal shows.
func startTTYShell(t *testing.T, d *harness.Daemon, ctx context.Context) (client.Container, client.Task, <-chan client.ExitStatus, *io.PipeWriter, *syncBuffer) {
	t.Helper()
	c := newContainer(t, d, ctx, []string{"sh"}, oci.WithTTY)
	stdin, typed := io.Pipe()
	t.Cleanup(func() { typed.Close() })
	out := &syncBuffer{}
	task, statusC := startTask(t, ctx, c, streams(d, stdin, out, nil, true))
	return c, task, statusC, typed, out
}

// execEcho execs `echo word` in task, as a user's `ctr task exec` would,
// and checks that it ran there and printed word.
func execEcho(t *testing.T, d *harness.Daemon, ctx context.Context, c client.Container, task client.Task, word string) {
	t.Helper()
	spec, err := c.Spec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pspec := *spec.Process
	pspec.Args = []string{"sh", "-c", "echo " + word}
	out := &syncBuffer{}
	p, err := task.Exec(ctx, word, &pspec, streams(d, nil, out, nil, false))
	if err != nil {
		t.Fatal(err)
	}
	pc, err := p.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if st := waitStatus(t, pc, 10*time.Second); st.ExitCode() != 0 {
		t.Errorf("exec %q: exit %d", word, st.ExitCode())
	}
	p.Delete(ctx)
	if out.String() != word+"\n" {
		t.Errorf("exec %q printed %q", word, out.String())
	}
}
