package migrate_test

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	ctrd "github.com/ckpt-dev/ckpt/integration/containerd/harness"
	"github.com/ckpt-dev/ckpt/integration/migrate/harness"
	"github.com/containerd/containerd/v2/client"
)

// Post-copy's failures: before the container runs on the target, the
// source is only frozen, and every failure thaws it (the same process,
// its memory intact) and leaves nothing on the target. After, the target
// fetches the pages not yet moved from the frozen source; a transfer that
// breaks then ends the target's copy and the source runs on.

// memsumOnSource starts a process holding mib MiB of known data on the
// source and returns its container, task, output and checksum.
func memsumOnSource(t *testing.T, h *harness.Hosts, mib int) (client.Container, client.Task, *syncBuffer, string) {
	t.Helper()
	c := newContainer(t, h, []string{"memsum", fmt.Sprint(mib)})
	out := &syncBuffer{}
	task := startTask(t, h, c, nil, out, false)
	sum := waitMatch(t, out, firstSum, 2*time.Minute)[1]
	return c, task, out, sum
}

// expectSourceWhole checks the source task is the same process, running,
// and that its memory still gives sum.
func expectSourceWhole(t *testing.T, h *harness.Hosts, task client.Task, pid uint32, out *syncBuffer, sum string) {
	t.Helper()
	ctx := h.Src.Context(context.Background())
	st, err := task.Status(ctx)
	if err != nil || st.Status != client.Running {
		t.Fatalf("the source task is %v (%v), want running", st.Status, err)
	}
	if task.Pid() != pid {
		t.Fatalf("the source task is pid %d, was %d", task.Pid(), pid)
	}
	n := strings.Count(out.String(), "sum ")
	if err := task.Kill(ctx, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for strings.Count(out.String(), "sum ") == n {
		if time.Now().After(deadline) {
			t.Fatal("the source does not answer SIGUSR1 with its checksum")
		}
		time.Sleep(20 * time.Millisecond)
	}
	sums := anySum.FindAllStringSubmatch(out.String(), -1)
	if got := sums[len(sums)-1][1]; got != sum {
		t.Fatalf("the source's memory checksum is %s, was %s", got, sum)
	}
}

// TestPostCopyTargetRestoreFails: the target's restore fails while the
// source is frozen serving its memory; the source is thawed and runs on
// (never restored: the same process), nothing stays on the target.
func TestPostCopyTargetRestoreFails(t *testing.T) {
	h := hosts(t)
	bad := badCRIUTarget(t, h)
	before := snapshotOf(t, bad)
	c, task, out, sum := memsumOnSource(t, h, 64)
	m := startMigrate(t, h, c.ID(), h.Addr(badCRIUPort), postCopy.flags(t, h)...)
	if err := m.wait(t, 2*time.Minute); err == nil {
		t.Fatal("ckpt migrate succeeded on a target whose criu fails")
	}
	for _, want := range []string{"source frozen, its memory served", "restore on the target", "the source runs on, thawed"} {
		if !strings.Contains(m.out.String(), want) {
			t.Errorf("the output does not say %q", want)
		}
	}
	expectSourceWhole(t, h, task, task.Pid(), out, sum)
	expectNothingNew(t, bad, c.ID(), before)
	expectNoCheckpointImage(t, h)
}

// TestPostCopyInterrupted: SIGINT to the client while the source is frozen
// and the target is held (its containerd stopped for a moment): the
// source is thawed with its memory intact and nothing stays on the target.
func TestPostCopyInterrupted(t *testing.T) {
	h := hosts(t)
	before := snapshotOf(t, h.Dst)
	c, task, out, sum := memsumOnSource(t, h, 64)
	pid := task.Pid()
	m := startMigrate(t, h, c.ID(), h.Addr(harness.DstPort), postCopy.flags(t, h)...)
	waitMatch(t, &m.out, regexp.MustCompile(`source frozen, its memory served`), time.Minute)
	target := h.Dst.Pid()
	if err := syscall.Kill(target, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	if err := m.cmd.Process.Signal(syscall.SIGINT); err != nil {
		syscall.Kill(target, syscall.SIGCONT)
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if err := syscall.Kill(target, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if err := m.wait(t, 2*time.Minute); err == nil {
		t.Fatal("ckpt migrate succeeded although interrupted before the target ran the container")
	}
	if !strings.Contains(m.out.String(), "the source runs on, thawed") {
		t.Errorf("the error does not say the source runs on")
	}
	expectSourceWhole(t, h, task, pid, out, sum)
	expectNothingNew(t, h.Dst, c.ID(), before)
	expectNoCheckpointImage(t, h)
}

// throttle slows the link between the hosts (the source's side of the
// veth pair) for the test, so that a transfer lasts long enough to break.
func throttle(t *testing.T, h *harness.Hosts, rate string) {
	t.Helper()
	out, err := exec.Command("ip", "-n", h.Net.Src, "-o", "link", "show", "type", "veth").Output()
	if err != nil {
		t.Fatal(err)
	}
	dev := strings.TrimSpace(strings.SplitN(strings.SplitN(string(out), ": ", 3)[1], "@", 2)[0])
	args := []string{"-n", h.Net.Src, "qdisc", "replace", "dev", dev, "root", "tbf", "rate", rate, "burst", "64kb", "latency", "400ms"}
	if b, err := exec.Command("tc", args...).CombinedOutput(); err != nil {
		t.Fatalf("tc %v: %v: %s", args, err, b)
	}
	t.Cleanup(func() { exec.Command("tc", "-n", h.Net.Src, "qdisc", "del", "dev", dev, "root").Run() })
}

// TestPostCopyTransferBroken: the container runs on the target, its pages
// still moving (a slow link), when the transfer breaks: the target's
// lazy-pages daemon, or the source's criu, is killed. The target's copy,
// which can no longer get its memory, is ended and removed; the source,
// which still has all of it, runs on with its memory intact.
func TestPostCopyTransferBroken(t *testing.T) {
	h := hosts(t)
	throttle(t, h, "200mbit")
	for _, side := range []string{"target lazy-pages", "source criu"} {
		t.Run(side, func(t *testing.T) {
			before := snapshotOf(t, h.Dst)
			c, task, out, sum := memsumOnSource(t, h, 256)
			pid := task.Pid()
			srcShim := ctrd.Shims(h.Src.Address)[c.ID()]
			m := startMigrate(t, h, c.ID(), h.Addr(harness.DstPort), postCopy.flags(t, h)...)
			waitMatch(t, &m.out, regexp.MustCompile(`the container runs on the target`), time.Minute)
			var victim int
			if side == "source criu" {
				victim = waitChild(t, srcShim, "criu", 10*time.Second)
			} else {
				dstShim := ctrd.Shims(h.Dst.Address)[c.ID()]
				if dstShim == 0 {
					t.Fatal("no shim on the target")
				}
				victim = waitChild(t, dstShim, "criu", 10*time.Second)
			}
			if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			if err := m.wait(t, 2*time.Minute); err == nil {
				t.Fatal("ckpt migrate succeeded although the transfer broke")
			}
			if !strings.Contains(m.out.String(), "the source runs on with its memory") {
				t.Errorf("the error does not say the source runs on")
			}
			expectSourceWhole(t, h, task, pid, out, sum)
			expectNothingNew(t, h.Dst, c.ID(), before)
			expectNoCheckpointImage(t, h)
		})
	}
}
