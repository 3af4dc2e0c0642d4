// Package migrate_test moves containers between two containerds on one
// machine (integration/migrate/harness) with `ckpt migrate`, run in the
// source's network namespace as an operator would run it on the source
// host, and checks what arrives and what is left.
package migrate_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	ctrd "github.com/ckpt-dev/ckpt/integration/containerd/harness"
	"github.com/ckpt-dev/ckpt/integration/internal/testutil"
	"github.com/ckpt-dev/ckpt/integration/migrate/harness"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
)

// What memsum (integration/internal/memsum) prints: the checksum of its
// memory once written, then one at each SIGUSR1.
var (
	firstSum = regexp.MustCompile(`sum 1 ([0-9a-f]{64})`)
	anySum   = regexp.MustCompile(`sum \d+ ([0-9a-f]{64})`)
)

var shared struct {
	once   sync.Once
	h      *harness.Hosts
	ckpt   string // the ckpt binary
	rootfs string
	err    error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.h != nil {
		if err := shared.h.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stop hosts:", err)
		}
	}
	if shared.rootfs != "" {
		os.RemoveAll(filepath.Dir(shared.rootfs))
	}
	os.Exit(code)
}

// hosts starts the two hosts once for the package.
func hosts(t *testing.T) *harness.Hosts {
	t.Helper()
	testutil.Require(t, "root", "containerd", "runc", "criu", "ip", "nsenter")
	shared.once.Do(func() {
		dir, err := os.MkdirTemp("", "ckpt-mig-build")
		if err != nil {
			shared.err = err
			return
		}
		shared.rootfs = filepath.Join(dir, "rootfs")
		testutil.Rootfs(t, shared.rootfs)
		shared.ckpt = filepath.Join(dir, "ckpt")
		if shared.err = goBuild(shared.ckpt, "./cmd/ckpt", false); shared.err != nil {
			return
		}
		// The workload runs in busybox's rootfs: static.
		if shared.err = goBuild(filepath.Join(shared.rootfs, "bin", "memsum"), "./integration/internal/memsum", true); shared.err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		shared.h, shared.err = harness.Start(ctx, shared.rootfs, "mig")
	})
	if shared.err != nil {
		t.Fatalf("hosts: %v", shared.err)
	}
	if shared.h == nil {
		t.Fatal("hosts did not start (see the first test's failure)")
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("source containerd log (tail):\n%s", lastLines(shared.h.Src.Log(), 40))
			t.Logf("target containerd log (tail):\n%s", lastLines(shared.h.Dst.Log(), 40))
		}
	})
	return shared.h
}

// goBuild builds pkg (a path in this module), static without cgo.
func goBuild(out, pkg string, static bool) error {
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = moduleRoot()
	if static {
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return nil
}

func moduleRoot() string {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "."
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

// migration is one run of `ckpt migrate` in the source's namespace.
type migration struct {
	cmd *exec.Cmd
	out syncBuffer // stdout and stderr (logrus)
}

// startMigrate starts `ckpt migrate ... id` against the target at
// address (host:port) with the given extra flags.
func startMigrate(t *testing.T, h *harness.Hosts, id, address string, flags ...string) *migration {
	t.Helper()
	args := []string{"--net=" + harness.Path(h.Net.Src), "--", shared.ckpt, "migrate",
		"--address", h.Src.Address, "--namespace", h.Src.Namespace,
		"--to", "tcp://" + address,
		"--tls-ca", h.PKI.CA, "--tls-cert", h.PKI.ClientCert, "--tls-key", h.PKI.ClientKey}
	args = append(append(args, flags...), id)
	m := &migration{cmd: exec.Command("nsenter", args...)}
	m.cmd.Stdout, m.cmd.Stderr = &m.out, &m.out
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return m
}

// wait waits for the CLI (bounded) and returns its error.
func (m *migration) wait(t *testing.T, timeout time.Duration) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- m.cmd.Wait() }()
	select {
	case err := <-done:
		t.Logf("ckpt migrate:\n%s", m.out.String())
		return err
	case <-time.After(timeout):
		m.cmd.Process.Kill()
		<-done
		t.Fatalf("ckpt migrate still running after %s:\n%s", timeout, m.out.String())
	}
	return nil
}

// migrate runs a move to the main target in mode and fails the test if it
// fails; it returns the CLI's output.
func migrate(t *testing.T, h *harness.Hosts, id string, mode mode, flags ...string) string {
	t.Helper()
	m := startMigrate(t, h, id, h.Addr(harness.DstPort), append(mode.flags(t, h), flags...)...)
	if err := m.wait(t, 3*time.Minute); err != nil {
		t.Fatalf("ckpt migrate: %v", err)
	}
	if mode.postCopy && !strings.Contains(m.out.String(), "every page moved") {
		t.Errorf("a post-copy move that did not say every page moved:\n%s", m.out.String())
	}
	return m.out.String()
}

// mode is how a test moves: stop-and-copy or post-copy.
type mode struct {
	name     string
	postCopy bool
}

var (
	stopAndCopy = mode{"stop-and-copy", false}
	postCopy    = mode{"post-copy", true}
	modes       = []mode{stopAndCopy, postCopy}
)

// flags are `ckpt migrate`'s for the mode. Post-copy: a page server on the
// source's address, a port of its own per move, with CRIU's TLS.
func (m mode) flags(t *testing.T, h *harness.Hosts) []string {
	t.Helper()
	if !m.postCopy {
		return []string{"--copy"}
	}
	cert, key := pageCert(t, h)
	return []string{"--page-server", net.JoinHostPort(h.Net.SrcIP, fmt.Sprint(27100+seq.Add(1))),
		"--page-tls-ca", h.PKI.CA, "--page-tls-cert", cert, "--page-tls-key", key}
}

var page struct {
	once      sync.Once
	cert, key string
	err       error
}

// pageCert is the page transfer's certificate (made once).
func pageCert(t *testing.T, h *harness.Hosts) (string, string) {
	page.once.Do(func() {
		page.cert, page.key, page.err = h.PKI.PageCert(filepath.Join(h.Dir, "pki"), net.ParseIP(h.Net.SrcIP))
	})
	if page.err != nil {
		t.Fatal(page.err)
	}
	return page.cert, page.key
}

var seq atomic.Int64

// newContainer creates a container on the source; it is removed from
// both hosts at the end.
func newContainer(t *testing.T, h *harness.Hosts, args []string, opts ...oci.SpecOpts) client.Container {
	t.Helper()
	ctx := h.Src.Context(context.Background())
	id := fmt.Sprintf("%s-%d", regexp.MustCompile(`[^A-Za-z0-9]+`).ReplaceAllString(t.Name(), "-"), seq.Add(1))
	c, err := h.Src.Client.NewContainer(ctx, id,
		client.WithNewSnapshot(id, h.Src.Image),
		client.WithNewSpec(append([]oci.SpecOpts{oci.WithImageConfig(h.Src.Image), oci.WithProcessArgs(args...)}, opts...)...),
		client.WithRuntime(ctrd.Runtime, nil),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, d := range append([]*ctrd.Daemon{h.Src, h.Dst}, targets()...) {
			removeContainer(t, d, id)
		}
	})
	return c
}

// targets are the extra targets started so far.
var extra struct {
	sync.Mutex
	ds []*ctrd.Daemon
}

func targets() []*ctrd.Daemon {
	extra.Lock()
	defer extra.Unlock()
	return append([]*ctrd.Daemon(nil), extra.ds...)
}

func removeContainer(t *testing.T, d *ctrd.Daemon, id string) {
	ctx, cancel := context.WithTimeout(d.Context(context.Background()), time.Minute)
	defer cancel()
	c, err := d.Client.LoadContainer(ctx, id)
	if err != nil {
		return
	}
	if task, err := c.Task(ctx, nil); err == nil {
		task.Kill(ctx, syscall.SIGKILL, client.WithKillAll)
		if _, err := task.Delete(ctx, client.WithProcessKill); err != nil {
			t.Errorf("cleanup: delete task %s: %v", id, err)
		}
	}
	if err := c.Delete(ctx, client.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		t.Errorf("cleanup: delete container %s: %v", id, err)
	}
}

// startTask starts c's task on the source with the given stdio.
func startTask(t *testing.T, h *harness.Hosts, c client.Container, stdin io.Reader, out io.Writer, terminal bool) client.Task {
	t.Helper()
	ctx := h.Src.Context(context.Background())
	opts := []cio.Opt{cio.WithFIFODir(filepath.Join(h.Src.Dir, "fifo")), cio.WithStreams(stdin, out, out)}
	if terminal {
		opts = append(opts, cio.WithTerminal)
	}
	task, err := c.NewTask(ctx, cio.NewCreator(opts...))
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return task
}

// fifoDir is a dir for the moved task's FIFOs (the target's filesystem is
// this machine's).
func fifoDir(t *testing.T, h *harness.Hosts) string {
	dir := filepath.Join(h.Dst.Dir, "mig-fifo", fmt.Sprint(seq.Add(1)))
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// attach connects to the FIFOs of a task on d: a moved task on the
// target, or a source task restored after a failed move (a client's
// streams end with the task it was attached to, as with any checkpoint).
func attach(t *testing.T, d *ctrd.Daemon, id string, stdin io.Reader, out io.Writer) client.Task {
	t.Helper()
	ctx := d.Context(context.Background())
	c, err := d.Client.LoadContainer(ctx, id)
	if err != nil {
		t.Fatalf("no container %s: %v", id, err)
	}
	task, err := c.Task(ctx, cio.NewAttach(cio.WithStreams(stdin, out, out)))
	if err != nil {
		t.Fatalf("attach to %s: %v", id, err)
	}
	t.Cleanup(func() {
		if io := task.IO(); io != nil {
			io.Cancel()
			io.Close()
		}
	})
	return task
}

// syncBuffer collects output.
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

// waitMatch waits until re matches the output and returns the match.
func waitMatch(t *testing.T, b *syncBuffer, re *regexp.Regexp, timeout time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if m := re.FindStringSubmatch(b.String()); m != nil {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the output after %s; it is:\n%q", re, timeout, lastLines(b.String(), 20))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
