package migrate_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	ctrd "github.com/ckpt-dev/ckpt/integration/containerd/harness"
	"github.com/ckpt-dev/ckpt/integration/migrate/harness"
	"github.com/containerd/containerd/v2/client"
)

// Ports of the targets with something missing.
const (
	noRuntimePort = 7444
	badCRIUPort   = 7445
)

var targetOnce struct {
	noRuntime, badCRIU sync.Once
	d                  [2]*ctrd.Daemon
	err                [2]error
}

// extraTarget starts (once) a target on port built by opts.
func extraTarget(t *testing.T, h *harness.Hosts, i int, once *sync.Once, port int, opts ...ctrd.Option) *ctrd.Daemon {
	t.Helper()
	once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		targetOnce.d[i], targetOnce.err[i] = h.StartTarget(ctx, shared.rootfs, port, opts...)
		if targetOnce.err[i] == nil {
			extra.Lock()
			extra.ds = append(extra.ds, targetOnce.d[i])
			extra.Unlock()
		}
	})
	if targetOnce.err[i] != nil {
		t.Fatalf("target on port %d: %v", port, targetOnce.err[i])
	}
	return targetOnce.d[i]
}

// badCRIUTarget is a target whose criu fails: its restore fails after
// everything before it (preflight, copy, container) succeeded.
func badCRIUTarget(t *testing.T, h *harness.Hosts) *ctrd.Daemon {
	t.Helper()
	dir := filepath.Join(h.Dir, "bad-criu")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/sh\necho 'criu: broken on this host (test stand-in)' >&2\nexit 1\n"
	if err := os.WriteFile(filepath.Join(dir, "criu"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return extraTarget(t, h, 1, &targetOnce.badCRIU, badCRIUPort, ctrd.WithPathFirst(dir))
}

// runningCounter starts a counter on the source and returns its task,
// output and pid.
func runningCounter(t *testing.T, h *harness.Hosts) (client.Container, client.Task, *syncBuffer) {
	t.Helper()
	c := newContainer(t, h, counter)
	out := &syncBuffer{}
	task := startTask(t, h, c, nil, out, false)
	waitMatch(t, out, regexp.MustCompile(`\n5\n`), 10*time.Second)
	return c, task, out
}

// expectSourceRuns checks the source's task runs (not paused) and counts
// on from where it was; samePid: the very process (never checkpointed),
// whose output still reaches out; else a restored one, attached to anew.
func expectSourceRuns(t *testing.T, h *harness.Hosts, c client.Container, out *syncBuffer, pid uint32, samePid bool) {
	t.Helper()
	ctx := h.Src.Context(context.Background())
	task, err := c.Task(ctx, nil)
	if err != nil {
		t.Fatalf("the source has no task: %v", err)
	}
	st, err := task.Status(ctx)
	if err != nil || st.Status != client.Running {
		t.Fatalf("the source task is %v (%v), want running", st.Status, err)
	}
	last := lastNumber(out.String())
	if samePid {
		if task.Pid() != pid {
			t.Errorf("the source task is pid %d, was %d: it was touched", task.Pid(), pid)
		}
		expectCounts(t, out, last, 10*time.Second)
		return
	}
	again := &syncBuffer{}
	attach(t, h.Src, c.ID(), nil, again)
	expectCounts(t, again, last, 10*time.Second)
}

// TestMigrateRefusedBeforeFreeze: bad input fails with a clear error and
// the source untouched (same process, never frozen), nothing on the target.
func TestMigrateRefusedBeforeFreeze(t *testing.T) {
	h := hosts(t)
	other, err := harness.NewPKI(filepath.Join(h.Dir, "other-pki"), "other", net.ParseIP(h.Net.DstIP))
	if err != nil {
		t.Fatal(err)
	}
	noRuntime := extraTarget(t, h, 0, &targetOnce.noRuntime, noRuntimePort, ctrd.WithoutShim())
	cases := []struct {
		name    string
		address string
		flags   []string
		target  *ctrd.Daemon
		want    string
	}{
		{"silent address", net.JoinHostPort(h.Net.Silent, "7443"), []string{"--copy", "--timeout", "3s"}, nil, "no answer in time"},
		{"nothing listening", h.Addr(1), []string{"--copy"}, nil, "nothing listens there"},
		{"certificate of another CA", h.Addr(harness.DstPort), []string{"--copy", "--tls-ca", other.CA, "--tls-cert", other.ClientCert, "--tls-key", other.ClientKey}, h.Dst, "TLS refused"},
		{"containerd's own TCP endpoint (CRI only)", h.Addr(harness.CRIPort), []string{"--copy"}, h.Dst, "does not serve containerd's API"},
		{"no ckpt runtime", h.Addr(noRuntimePort), []string{"--copy"}, noRuntime, "cannot run io.containerd.ckpt.v2"},
		{"post-copy without a page server", h.Addr(harness.DstPort), nil, h.Dst, "post-copy needs the address the source's page server listens on"},
		{"page server on every address", h.Addr(harness.DstPort), []string{"--page-server", "0.0.0.0:27000"}, h.Dst, "the target dials this address"},
	}
	c, task, out := runningCounter(t, h)
	pid := task.Pid()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var before state
			if tc.target != nil {
				before = snapshotOf(t, tc.target)
			}
			m := startMigrate(t, h, c.ID(), tc.address, tc.flags...)
			err := m.wait(t, time.Minute)
			if err == nil {
				t.Fatal("ckpt migrate succeeded")
			}
			if !strings.Contains(m.out.String(), tc.want) {
				t.Errorf("the error does not say %q:\n%s", tc.want, m.out.String())
			}
			if strings.Contains(m.out.String(), "checkpointing the source") {
				t.Error("the source was checkpointed before the bad input was found")
			}
			expectSourceRuns(t, h, c, out, pid, true)
			if tc.target != nil {
				expectNothingNew(t, tc.target, c.ID(), before)
			}
		})
	}
}

// TestMigrateTargetRestoreFails: the restore on the target fails after the
// checkpoint was copied; the source runs again from its checkpoint (the
// counter continues, on the same stdio) and the target keeps nothing.
func TestMigrateTargetRestoreFails(t *testing.T) {
	h := hosts(t)
	bad := badCRIUTarget(t, h)
	before := snapshotOf(t, bad)
	c, task, out := runningCounter(t, h)
	m := startMigrate(t, h, c.ID(), h.Addr(badCRIUPort), "--copy")
	if err := m.wait(t, 2*time.Minute); err == nil {
		t.Fatal("ckpt migrate succeeded on a target whose criu fails")
	}
	for _, want := range []string{"restore on the target", "the source runs again"} {
		if !strings.Contains(m.out.String(), want) {
			t.Errorf("the error does not say %q", want)
		}
	}
	expectSourceRuns(t, h, c, out, task.Pid(), false)
	expectNothingNew(t, bad, c.ID(), before)
	expectNoCheckpointImage(t, h)
}

// TestMigrateInterrupted: SIGINT to the client while the checkpoint is
// copied; the source runs again with its memory intact, nothing is left
// on the target.
func TestMigrateInterrupted(t *testing.T) {
	h := hosts(t)
	before := snapshotOf(t, h.Dst)
	c := newContainer(t, h, []string{"memsum", "256"})
	out := &syncBuffer{}
	startTask(t, h, c, nil, out, false)
	sum := waitMatch(t, out, firstSum, 2*time.Minute)[1]

	m := startMigrate(t, h, c.ID(), h.Addr(harness.DstPort), "--copy")
	waitMatch(t, &m.out, regexp.MustCompile(`copying blob.*bytes=\d{8,}`), time.Minute)
	if err := m.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := m.wait(t, 2*time.Minute); err == nil {
		t.Fatal("ckpt migrate succeeded although interrupted during the copy")
	}
	if !strings.Contains(m.out.String(), "the source runs again") {
		t.Errorf("the error does not say the source runs again")
	}
	ctx := h.Src.Context(context.Background())
	task, err := c.Task(ctx, nil)
	if err != nil {
		t.Fatalf("the source has no task: %v", err)
	}
	if st, err := task.Status(ctx); err != nil || st.Status != client.Running {
		t.Fatalf("the source task is %v (%v), want running", st.Status, err)
	}
	again := &syncBuffer{}
	attach(t, h.Src, c.ID(), nil, again)
	if err := task.Kill(ctx, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	got := waitMatch(t, again, anySum, time.Minute)[1]
	if got != sum {
		t.Fatalf("the source's memory checksum after the interrupted move is %s, was %s", got, sum)
	}
	expectNothingNew(t, h.Dst, c.ID(), before)
	expectNoCheckpointImage(t, h)
}

func expectNoCheckpointImage(t *testing.T, h *harness.Hosts) {
	t.Helper()
	imgs, err := h.Src.Client.ImageService().List(h.Src.Context(context.Background()))
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range imgs {
		if strings.HasPrefix(i.Name, "ckpt-migrate/") {
			t.Errorf("the source keeps checkpoint image %s", i.Name)
		}
	}
}

// TestMigrateSourceCRIUKilled: the source's criu is killed as soon as it
// runs (while it dumps 256 MiB; in post-copy, possibly once it serves the
// memory, before the target restored); the move fails, and the source runs
// on, the same process, thawed, with the same memory.
func TestMigrateSourceCRIUKilled(t *testing.T) { forEachMode(t, testSourceCRIUKilled) }

func testSourceCRIUKilled(t *testing.T, h *harness.Hosts, mode mode) {
	before := snapshotOf(t, h.Dst)
	c := newContainer(t, h, []string{"memsum", "256"})
	out := &syncBuffer{}
	task := startTask(t, h, c, nil, out, false)
	sum := waitMatch(t, out, firstSum, 2*time.Minute)[1]
	shim := ctrd.Shims(h.Src.Address)[c.ID()]
	if shim == 0 {
		t.Fatal("no shim found for the source container")
	}

	m := startMigrate(t, h, c.ID(), h.Addr(harness.DstPort), mode.flags(t, h)...)
	criu := waitChild(t, shim, "criu", 30*time.Second)
	if err := syscall.Kill(criu, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := m.wait(t, 2*time.Minute); err == nil {
		t.Fatal("ckpt migrate succeeded although the source's criu was killed")
	}
	if !strings.Contains(m.out.String(), "the source runs on") {
		t.Errorf("the error does not say the source runs on")
	}
	ctx := h.Src.Context(context.Background())
	if st, err := task.Status(ctx); err != nil || st.Status != client.Running {
		t.Fatalf("the source task is %v (%v), want running", st.Status, err)
	}
	if err := task.Kill(ctx, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	// The same output: the first sum is the one taken at the start.
	got := waitMatch(t, out, regexp.MustCompile(`sum 2 ([0-9a-f]{64})`), time.Minute)[1]
	if got != sum {
		t.Fatalf("the source's memory checksum is %s, was %s", got, sum)
	}
	expectNothingNew(t, h.Dst, c.ID(), before)
	expectNoCheckpointImage(t, h)
}

// waitChild waits for a child of ppid named comm and returns its pid.
func waitChild(t *testing.T, ppid int, comm string, timeout time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
			if err != nil {
				continue
			}
			// pid (comm) state ppid ...
			s := string(stat)
			open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
			if open < 0 || end < open {
				continue
			}
			f := strings.Fields(s[end+1:])
			if s[open+1:end] == comm && len(f) > 1 && f[1] == strconv.Itoa(ppid) {
				return pid
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no %s child of %d in %s", comm, ppid, timeout)
	return 0
}
