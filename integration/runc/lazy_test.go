package runc_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ckpt-dev/ckpt/runtime/container"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// lazyMiB is the memory the lazy tests move: enough that the pages take
// longer than the restore itself.
const lazyMiB = 256

// newMemCtr is a container running memsum with mib MiB of known data,
// started; it returns the data's checksum as memsum computed it.
func newMemCtr(t *testing.T, mib int) (*ctr, string) {
	t.Helper()
	c := newCtr(t, func(s *specs.Spec) {
		s.Process.Args = []string{"/bin/memsum", strconv.Itoa(mib)}
	})
	bin := filepath.Join(c.bundle, "rootfs", "bin", "memsum")
	if out, err := exec.Command("go", "build", "-o", bin, "../internal/memsum").CombinedOutput(); err != nil {
		t.Fatalf("build memsum: %v\n%s", err, out)
	}
	f := c.openOut()
	cmd := exec.Command("runc", "--root", c.root, "run", "-d", "--bundle", c.bundle, c.id)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Run(); err != nil {
		t.Fatalf("runc run: %v\n%s", err, readFile(c.out))
	}
	return c, c.sum(1)
}

var sumLine = regexp.MustCompile(`(?m)^sum (\d+) ([0-9a-f]{64})$`)

// sum waits for memsum's k-th checksum line and returns it.
func (c *ctr) sum(k int) string {
	c.t.Helper()
	var got string
	waitFor(c.t, fmt.Sprintf("checksum %d (output: %q)", k, tail(readFile(c.out))), func() bool {
		for _, m := range sumLine.FindAllStringSubmatch(readFile(c.out), -1) {
			if m[1] == strconv.Itoa(k) {
				got = m[2]
				return true
			}
		}
		return false
	})
	return got
}

// resum asks container id's memsum for its k-th checksum, computed inside
// the container from its memory as it is now.
func (c *ctr) resum(id string, k int) string {
	c.t.Helper()
	run(c.t, "runc", "--root", c.root, "kill", id, "USR1")
	return c.sum(k)
}

// beats is the last heartbeat memsum printed.
func (c *ctr) beats() int {
	m := regexp.MustCompile(`(?m)^beat (\d+)$`).FindAllStringSubmatch(readFile(c.out), -1)
	if len(m) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(m[len(m)-1][1])
	return n
}

func (c *ctr) waitBeat(n int) {
	c.t.Helper()
	waitFor(c.t, fmt.Sprintf("heartbeat %d (output: %q)", n, tail(readFile(c.out))), func() bool { return c.beats() >= n })
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func pidNS(t *testing.T, pid int) string {
	t.Helper()
	l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// copyImages copies a checkpoint as it would travel to another host.
func copyImages(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "images-copy")
	run(t, "cp", "-a", src, dst)
	return dst
}

// waitPagesIn waits, bounded, for a lazy restore's last page.
func waitPagesIn(t *testing.T, r *container.Restoring) error {
	t.Helper()
	select {
	case <-r.PagesIn():
		return r.LazyErr()
	case <-time.After(time.Minute):
		t.Fatal("the lazy transfer did not end within a minute")
		return nil
	}
}

// TestLazyRestoreLocal: a full checkpoint restored lazily runs before its
// memory is read, every page arrives (the checksum the container computes
// matches), and the lazy-pages daemon is gone afterwards.
func TestLazyRestoreLocal(t *testing.T) {
	c, want := newMemCtr(t, lazyMiB)
	images := c.checkpoint(container.CheckpointOptions{})
	opts := c.restoreOpts(images, c.id+"-lazy")
	opts.LazyPages = true
	start := time.Now()
	r, err := container.StartRestore(ctx(t), opts)
	if err != nil {
		t.Fatalf("lazy restore: %v", err)
	}
	c.id = opts.ID
	if err := r.Finish(ctx(t)); err != nil {
		t.Fatalf("lazy restore: %v", err)
	}
	running := time.Since(start)
	if err := waitPagesIn(t, r); err != nil {
		t.Fatalf("lazy transfer: %v", err)
	}
	t.Logf("%d MiB: running after %s, all pages in after %s", lazyMiB, running, time.Since(start))
	if status, _ := c.state(c.id); status != "running" {
		t.Fatalf("restored container is %q", status)
	}
	if got := c.resum(c.id, 2); got != want {
		t.Fatalf("checksum after lazy restore %s, want %s", got, want)
	}
	assertNoLazyDaemon(t, opts.WorkPath)
}

// TestLazyRestoreRefusals: a page server for an image that holds its
// memory is refused with the reason, before anything is made.
func TestLazyRestoreRefusals(t *testing.T) {
	c, _ := newMemCtr(t, 16)
	images := c.checkpoint(container.CheckpointOptions{LeaveRunning: true})
	opts := c.restoreOpts(images, c.id+"-r")
	opts.LazyPages, opts.PageServer = true, freePort(t)
	_, err := container.StartRestore(ctx(t), opts)
	if err == nil || !regexp.MustCompile(`holds its memory`).MatchString(err.Error()) {
		t.Fatalf("lazy restore of a full image from a page server: %v, want a refusal", err)
	}
	c.assertGone(opts.ID, nil)
}

// assertNoLazyDaemon: no criu lazy-pages of this work dir runs.
func assertNoLazyDaemon(t *testing.T, workDir string) {
	t.Helper()
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline := readFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if regexp.MustCompile(`lazy-pages\x00`).MatchString(cmdline) && regexp.MustCompile(regexp.QuoteMeta(workDir)).MatchString(cmdline) && alive(pid) {
			t.Errorf("criu lazy-pages %d of %s still runs", pid, workDir)
		}
	}
}

// lazyMove checkpoints c with lazy pages served on loopback and starts
// restoring a copy of the images under a new id; it returns at
// setup-namespaces of the restore.
func lazyMove(t *testing.T, c *ctr, timeout time.Duration) (*container.LazyCheckpoint, *container.Restoring, container.RestoreOptions) {
	t.Helper()
	lc, r, opts, err := lazyMoveTLS(t, c, timeout, container.TLS{}, container.TLS{})
	if err != nil {
		t.Fatalf("lazy restore: %v", err)
	}
	return lc, r, opts
}

// lazyMoveTLS is lazyMove with TLS at the source (src) and the target
// (dst); the restore's error is returned.
func lazyMoveTLS(t *testing.T, c *ctr, timeout time.Duration, src, dst container.TLS) (*container.LazyCheckpoint, *container.Restoring, container.RestoreOptions, error) {
	t.Helper()
	addr := freePort(t)
	images := filepath.Join(t.TempDir(), "images")
	lc, err := container.StartCheckpoint(ctx(t), container.CheckpointOptions{
		Root: c.root, ID: c.id, ImagePath: images, LazyPages: true, PageServer: addr,
		TransferTimeout: timeout, TLS: src,
	})
	if err != nil {
		t.Fatalf("lazy checkpoint: %v", err)
	}
	t.Cleanup(func() { lc.Abort(context.Background()) })
	// CRIU ignores the address of a lazy dump's page server in RPC mode;
	// ckpt passes it in a config file.
	_, port, _ := net.SplitHostPort(addr)
	if got := listeners(port); len(got) != 1 || got[0] != "0100007F" {
		t.Errorf("page server listens on %v (hex, /proc/net/tcp*), want only 127.0.0.1 (0100007F)", got)
	}
	if md := lc.Metadata(); !md.Options.LazyPages {
		t.Fatalf("ckpt.json at status-ready does not say lazy_pages: %+v", md.Options)
	}
	// Not the source's id with a suffix: runc list's output is searched
	// for ids.
	opts := c.restoreOpts(copyImages(t, images), fmt.Sprintf("moved-%d-%d", os.Getpid(), seq.Add(1)))
	opts.LazyPages, opts.PageServer, opts.TransferTimeout, opts.TLS = true, addr, time.Minute, dst
	r, err := container.StartRestore(ctx(t), opts)
	if err != nil {
		return lc, nil, opts, err
	}
	return lc, r, opts, nil
}

// TestLazyMigrationLoopback: post-copy between two runc containers on one
// host: the source dumps with lazy pages and serves them on loopback, the
// target restores a copy of the images in its own pid namespace and runs
// before its memory has arrived; when every page is in the source is gone
// and the target's memory checksum matches.
func TestLazyMigrationLoopback(t *testing.T) {
	c, want := newMemCtr(t, lazyMiB)
	src := c.id
	_, srcPid := c.state(src)
	srcCgroups := c.cgroupPaths(src)
	lc, r, opts := lazyMove(t, c, time.Minute)
	t.Cleanup(func() { c.destroy(opts.ID) })
	if pidNS(t, r.Pid()) == pidNS(t, srcPid) {
		t.Fatal("the restored container shares its frozen source's pid namespace")
	}
	if err := r.Finish(ctx(t)); err != nil {
		t.Fatalf("lazy restore: %v", err)
	}
	if err := waitPagesIn(t, r); err != nil {
		t.Fatalf("lazy transfer: %v", err)
	}
	md, err := lc.Wait(ctx(t))
	if err != nil {
		t.Fatalf("source's lazy dump: %v", err)
	}
	if !md.Options.LazyPages {
		t.Errorf("final ckpt.json does not say lazy_pages: %+v", md.Options)
	}
	if alive(srcPid) {
		t.Error("source init still runs after the transfer")
	}
	c.assertGone(src, srcCgroups)
	c.id = opts.ID
	if got := c.resum(c.id, 2); got != want {
		t.Fatalf("checksum after migration %s, want %s", got, want)
	}
	assertNoLazyDaemon(t, opts.WorkPath)
}

// TestLazyMigrationDaemonKilled: the target's lazy-pages daemon dies
// before the container runs there: the restore fails at once and leaves
// nothing. The source's page server never had a client: it serves until
// the transfer timeout, then criu is killed and the source thawed; it runs
// on with its memory intact.
func TestLazyMigrationDaemonKilled(t *testing.T) {
	c, want := newMemCtr(t, lazyMiB)
	src := c.id
	const timeout = 3 * time.Second
	lc, r, opts := lazyMove(t, c, timeout)
	killLazyDaemon(t, opts.WorkPath)
	start := time.Now()
	if err := r.Finish(ctx(t)); err == nil {
		t.Fatal("restore succeeded without its lazy-pages daemon")
	} else {
		t.Logf("restore failed as it should (%s): %v", time.Since(start), err)
	}
	if _, err := lc.Wait(ctx(t)); !errors.Is(err, container.ErrTransferTimeout) {
		t.Fatalf("source's lazy dump: %v, want the transfer timeout", err)
	}
	if d := time.Since(start); d > timeout+10*time.Second {
		t.Errorf("the source was frozen %s, longer than its transfer timeout %s allows", d, timeout)
	}
	c.assertGone(opts.ID, nil)
	if status, _ := c.state(src); status != "running" {
		t.Fatalf("source is %q after the failed transfer, want running", status)
	}
	c.waitBeat(c.beats() + 2)
	if got := c.resum(src, 2); got != want {
		t.Fatalf("source's checksum after the failed transfer %s, want %s", got, want)
	}
}

// TestLazyMigrationSourceAborted: the dumping criu is killed (Abort) after
// the target runs. Either the transfer had completed (Abort says so and
// the target's memory is whole) or the source is thawed and runs on whole,
// and the target, whose missing pages would read as zeros, is killed.
func TestLazyMigrationSourceAborted(t *testing.T) {
	c, want := newMemCtr(t, lazyMiB)
	src := c.id
	lc, r, opts := lazyMove(t, c, time.Minute)
	t.Cleanup(func() { c.destroy(opts.ID) })
	if err := r.Finish(ctx(t)); err != nil {
		t.Fatalf("lazy restore: %v", err)
	}
	aborted := lc.Abort(ctx(t)) == nil
	lazyErr := waitPagesIn(t, r)
	t.Logf("abort took effect: %v; target's transfer: %v", aborted, lazyErr)
	if !aborted {
		if lazyErr != nil {
			t.Fatalf("transfer completed at the source but failed at the target: %v", lazyErr)
		}
		c.id = opts.ID
		if got := c.resum(c.id, 2); got != want {
			t.Fatalf("target checksum %s, want %s", got, want)
		}
		return
	}
	if lazyErr == nil {
		t.Fatal("source aborted mid-transfer, yet the target reports every page in")
	}
	_, pid := c.state(opts.ID)
	if pid > 0 && alive(pid) {
		t.Fatalf("target %d runs on without its memory", pid)
	}
	if !regexp.MustCompile(`container killed`).MatchString(lazyErr.Error()) {
		t.Errorf("target's error does not say the container was killed: %v", lazyErr)
	}
	if status, _ := c.state(src); status != "running" {
		t.Fatalf("source is %q after the abort, want running", status)
	}
	c.waitBeat(c.beats() + 2)
	if got := c.resum(src, 2); got != want {
		t.Fatalf("source's checksum after the abort %s, want %s", got, want)
	}
}

// killLazyDaemon kills the criu lazy-pages of workDir.
func killLazyDaemon(t *testing.T, workDir string) {
	t.Helper()
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline := readFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if regexp.MustCompile(`lazy-pages\x00`).MatchString(cmdline) && regexp.MustCompile(regexp.QuoteMeta(workDir)).MatchString(cmdline) {
			if err := unix.Kill(pid, unix.SIGKILL); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatalf("no criu lazy-pages for %s", workDir)
}

// listeners are the local addresses (hex, as /proc/net/tcp shows them) of
// the TCP sockets listening on port in this network namespace.
func listeners(port string) []string {
	want, _ := strconv.Atoi(port)
	var out []string
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		for _, l := range strings.Split(readFile(f), "\n") {
			fs := strings.Fields(l)
			if len(fs) < 4 || fs[3] != "0A" {
				continue
			}
			i := strings.LastIndex(fs[1], ":")
			if p, err := strconv.ParseUint(fs[1][i+1:], 16, 32); err == nil && int(p) == want {
				out = append(out, fs[1][:i])
			}
		}
	}
	return out
}
