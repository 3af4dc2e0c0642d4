package runc_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ckpt-dev/ckpt/runtime/container"
	"github.com/ckpt-dev/ckpt/runtime/criu"
	"golang.org/x/sys/unix"
)

// subreaper makes this process the reaper of orphans for the test: what a
// killed or interrupted ckpt leaves (criu, a half-restored tree) is then
// reparented here, where leftChildren sees it, instead of to init.
func subreaper(t *testing.T) {
	t.Helper()
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
}

// ourChildren lists this process's children, reaping zombies among them.
func ourChildren() []int {
	var out []int
	tids, _ := os.ReadDir("/proc/self/task")
	for _, tid := range tids {
		b, _ := os.ReadFile("/proc/self/task/" + tid.Name() + "/children")
		for _, f := range strings.Fields(string(b)) {
			pid, _ := strconv.Atoi(f)
			var ws unix.WaitStatus
			if got, _ := unix.Wait4(pid, &ws, unix.WNOHANG, nil); got == pid {
				continue
			}
			out = append(out, pid)
		}
	}
	return out
}

// assertNoChildren fails t if a process is left among our children
// (bounded wait: a killed process takes a moment to be reaped).
func assertNoChildren(t *testing.T, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		left := ourChildren()
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, p := range left {
				cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p))
				t.Errorf("%s: process %d left behind: %q", what, p, strings.ReplaceAll(string(cmd), "\x00", " "))
				unix.Kill(p, unix.SIGKILL)
			}
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// signalAt runs bin with args, sends sig after delay and returns its
// output, whether it succeeded, and how long it took to end after the
// signal (bounded: a ckpt that does not end fails the test).
func signalAt(t *testing.T, bin string, args []string, sig syscall.Signal, delay time.Duration) (string, bool) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	time.Sleep(delay)
	cmd.Process.Signal(sig)
	select {
	case err := <-done:
		return out.String(), err == nil
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("ckpt %s did not end within 30s of %v: %s", args[0], sig, out.String())
		return "", false
	}
}

var interruptDelays = []time.Duration{0, 3, 6, 10, 15, 20, 25, 30, 40, 50, 60, 80, 100, 150}

// TestCLIRestoreInterrupted sends SIGINT or SIGTERM to `ckpt restore` at
// points from before criu starts to after the restore: each ends with
// either a running container or nothing at all (no criu, no restored
// process, mount, cgroup or state dir), and the id restores afterwards.
func TestCLIRestoreInterrupted(t *testing.T) {
	c, images := checkpointed(t)
	bin := buildCLI(t)
	subreaper(t)
	interrupted := 0
	for i, d := range interruptDelays {
		delay := d * time.Millisecond
		sig := []syscall.Signal{unix.SIGINT, unix.SIGTERM}[i%2]
		id := fmt.Sprintf("%s-sig%d", c.id, i)
		out, ok := signalAt(t, bin, []string{"restore", "--root", c.root, "--bundle", c.bundle, "--image-path", images,
			"--work-path", t.TempDir(), "--detach", "--stdout", c.out, "--stderr", c.out, id}, sig, delay)
		if ok {
			if st, _ := c.state(id); st != "running" {
				t.Fatalf("%s at %s: ckpt succeeded, container is %q", sig, delay, st)
			}
			c.destroy(id)
		} else {
			// A signal before ckpt's main caught it ends ckpt silently,
			// before it made anything; the checks below still apply.
			if strings.Contains(out, "context canceled") {
				interrupted++
			} else if out != "" {
				t.Errorf("%s at %s: %s", sig, delay, out)
			}
		}
		t.Logf("%v at %s: completed=%v", sig, delay, ok)
		c.assertGone(id, nil)
		assertNoChildren(t, fmt.Sprintf("%v at %s", sig, delay))
	}
	if interrupted == 0 {
		t.Fatal("no restore was interrupted while it ran: the delays miss the restore")
	}
	before := c.last()
	c.restore(images, c.id)
	c.waitCount(before + 3)
}

// TestCLICheckpointInterrupted: an interrupted `ckpt checkpoint
// --leave-running` leaves the container running, thawed and counting.
func TestCLICheckpointInterrupted(t *testing.T) {
	c := newCtr(t, nil)
	c.start()
	bin := buildCLI(t)
	subreaper(t)
	for i, d := range interruptDelays {
		delay := d * time.Millisecond
		sig := []syscall.Signal{unix.SIGINT, unix.SIGTERM}[i%2]
		_, ok := signalAt(t, bin, []string{"checkpoint", "--root", c.root, "--image-path", filepath.Join(t.TempDir(), "img"),
			"--leave-running", c.id}, sig, delay)
		st, _ := c.state(c.id)
		if st != "running" {
			t.Fatalf("%v at %s (completed=%v): container is %q", sig, delay, ok, st)
		}
		c.waitCount(c.last() + 3) // thawed: it counts on
		t.Logf("%v at %s: completed=%v", sig, delay, ok)
		for _, p := range ourChildren() {
			if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", p)); strings.HasSuffix(exe, "/criu") {
				t.Errorf("%v at %s: criu %d left", sig, delay, p)
			}
		}
	}
	c.assertContinuous()
}

// findCriu returns our child criu swrk: a child running criu's binary
// that is not the restored root (which runs criu's code too until the
// restorer takes over; it is our child as well, forked with rst_sibling).
func findCriu(root int) int {
	for _, p := range ourChildren() {
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", p))
		if p != root && strings.HasSuffix(exe, "/criu") {
			return p
		}
	}
	return 0
}

// TestRestoreCriuKilled kills criu at stages of a restore, from before it
// forked the tree to after the mount tree: the restore fails in bounded
// time saying criu was killed by signal 9, and nothing is left (the tree's
// first task, which inherited the RPC socket, included).
func TestRestoreCriuKilled(t *testing.T) {
	c, images := checkpointed(t)
	subreaper(t)
	for _, stage := range []criu.Stage{criu.PreRestore, criu.SetupNamespaces, criu.PostSetupNamespaces, criu.PostRestore} {
		t.Run(string(stage), func(t *testing.T) {
			id := c.id + "-killed"
			opts := c.restoreOpts(images, id)
			opts.OnStage = func(_ context.Context, s criu.Stage, root int) error {
				if s == stage {
					p := findCriu(root)
					if p == 0 {
						return errors.New("test: criu not found")
					}
					unix.Kill(p, unix.SIGKILL)
				}
				return nil
			}
			start := time.Now()
			done := make(chan error, 1)
			go func() { _, err := container.Restore(ctx(t), opts); done <- err }()
			var err error
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("restore hangs after criu was killed")
			}
			if err == nil {
				c.destroy(id)
				t.Fatal("restore succeeded")
			}
			t.Logf("after %s: %v", time.Since(start).Round(time.Millisecond), err)
			if !strings.Contains(err.Error(), "killed by signal 9") {
				t.Errorf("error does not say criu was killed: %v", err)
			}
			c.assertGone(id, nil)
			assertNoChildren(t, string(stage))
		})
	}
	before := c.last()
	c.restore(images, c.id)
	c.waitCount(before + 3)
}

// TestKilledCkptLeftover kills `ckpt restore` with SIGKILL at points of a
// restore. What it left under the id is removed by `ckpt delete`, by
// `runc delete --force` followed by the next restore, or by the next
// restore alone; each leaves nothing, and the bundle's rootfs is intact
// (a recursive removal must never reach it through the criu-root bind).
func TestKilledCkptLeftover(t *testing.T) {
	c, images := checkpointed(t)
	bin := buildCLI(t)
	subreaper(t)
	busybox := filepath.Join(c.bundle, "rootfs", "bin", "busybox")
	left := 0
	for i, d := range []time.Duration{20, 30, 40, 50, 60, 80, 100, 150} {
		delay := d * time.Millisecond
		id := fmt.Sprintf("%s-k%d", c.id, i)
		_, ok := signalAt(t, bin, []string{"restore", "--root", c.root, "--bundle", c.bundle, "--image-path", images,
			"--work-path", t.TempDir(), "--detach", "--stdout", c.out, "--stderr", c.out, id}, unix.SIGKILL, delay)
		if ok {
			c.destroy(id)
			continue
		}
		wasLeft, err := container.Leftover(c.root, id)
		if err != nil {
			t.Fatal(err)
		}
		if wasLeft {
			left++
		}
		how := []string{"ckpt delete", "runc delete, then restore", "restore"}[i%3]
		t.Logf("SIGKILL at %s: leftover=%v; removed by %s", delay, wasLeft, how)
		switch how {
		case "ckpt delete":
			if out, err := command(t, bin, "delete", "--root", c.root, id).CombinedOutput(); err != nil {
				t.Fatalf("ckpt delete: %v: %s", err, out)
			}
		case "runc delete, then restore":
			if out, err := command(t, "runc", "--root", c.root, "delete", "--force", id).CombinedOutput(); err != nil {
				t.Fatalf("runc delete --force: %v: %s", err, out)
			}
			fallthrough
		case "restore":
			c.restore(images, id) // removes the leftover first
			c.destroy(id)
		}
		if _, err := os.Stat(busybox); err != nil {
			t.Fatalf("the bundle's rootfs lost %s: %v", busybox, err)
		}
		c.assertGone(id, nil)
		assertNoChildren(t, fmt.Sprintf("SIGKILL at %s", delay))
	}
	if left == 0 {
		t.Fatal("no SIGKILL left anything: the delays miss the restore")
	}
}
