package runc_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ckpt-dev/ckpt/runtime/container"
	"github.com/ckpt-dev/ckpt/runtime/criu"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// TestRestoreHeldUntilFinish: StartRestore returns with the restored root
// and its namespaces existing while nothing runs yet (the counter does not
// move, runc does not know the container); CRIU goes on to restore the
// mount tree and stops at post-setup-namespaces, before any other task;
// Finish completes it. Every CRIU stage reaches OnStage with the root's
// pid.
func TestRestoreHeldUntilFinish(t *testing.T) {
	c, images := checkpointed(t)
	var mu sync.Mutex
	var stages []string
	opts := c.restoreOpts(images, c.id)
	opts.OnStage = func(_ context.Context, s criu.Stage, pid int) error {
		mu.Lock()
		defer mu.Unlock()
		if pid > 0 {
			stages = append(stages, string(s))
		} else {
			stages = append(stages, string(s)+"(no pid)")
		}
		return nil
	}
	r, err := container.StartRestore(ctx(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	pid := r.Pid()
	if pid <= 0 {
		t.Fatalf("pid %d while held", pid)
	}
	if _, err := os.Stat("/proc/" + itoa(pid) + "/ns/net"); err != nil {
		t.Fatalf("restored root's netns while held: %v", err)
	}
	if st, _ := c.state(c.id); st != "" {
		t.Fatalf("runc knows the container while held: %s", st)
	}
	held := c.last()
	time.Sleep(300 * time.Millisecond)
	if c.last() != held {
		t.Fatal("the container ran while CRIU was held")
	}
	mu.Lock()
	whileHeld := slices.Clone(stages)
	mu.Unlock()
	if !slices.Contains(whileHeld, "post-setup-namespaces") || slices.Contains(whileHeld, "post-restore") {
		t.Fatalf("stages while held: %v, want up to post-setup-namespaces", whileHeld)
	}
	if err := r.Finish(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if st, rpid := c.state(c.id); st != "running" || rpid != pid {
		t.Fatalf("after Finish: %s %d, want running %d", st, rpid, pid)
	}
	c.waitCount(held + 3)
	c.assertContinuous()
	mu.Lock()
	defer mu.Unlock()
	for _, want := range []string{"pre-restore(no pid)", "setup-namespaces", "post-restore", "post-resume"} {
		if !slices.Contains(stages, want) {
			t.Errorf("stages %v lack %s", stages, want)
		}
	}
}

// TestRestoreRootfsLate: a caller that writes into the rootfs between
// StartRestore and Finish (the CRI plugin unpacks rootfs-diff.tar there)
// gets CRIU held at setup-namespaces, before the mount tree: a bind
// mountpoint replaced meanwhile is mounted on as it is at Finish.
func TestRestoreRootfsLate(t *testing.T) {
	src := filepath.Join(t.TempDir(), "conf")
	if err := os.WriteFile(src, []byte("from the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := newCtr(t, func(s *specs.Spec) {
		s.Mounts = append(s.Mounts, specs.Mount{Destination: "/etc/ckpt-conf", Type: "bind", Source: src, Options: []string{"bind", "ro"}})
	})
	c.start()
	images := c.checkpoint(container.CheckpointOptions{})
	var mu sync.Mutex
	var stages []string
	opts := c.restoreOpts(images, c.id)
	opts.RootfsLate = true
	opts.OnStage = func(_ context.Context, s criu.Stage, _ int) error {
		mu.Lock()
		defer mu.Unlock()
		stages = append(stages, string(s))
		return nil
	}
	r, err := container.StartRestore(ctx(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	mu.Lock()
	whileHeld := slices.Clone(stages)
	mu.Unlock()
	if !slices.Contains(whileHeld, "setup-namespaces") || slices.Contains(whileHeld, "post-setup-namespaces") {
		t.Fatalf("stages while held: %v, want up to setup-namespaces", whileHeld)
	}
	// What unpacking a layer does to a file it holds: a new inode.
	mp := filepath.Join(c.bundle, "rootfs", "etc", "ckpt-conf")
	if err := os.Remove(mp); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(mp, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	before := c.last()
	if err := r.Finish(ctx(t)); err != nil {
		t.Fatal(err)
	}
	c.waitCount(before + 3)
	if out, err := c.exec("cat", "/etc/ckpt-conf"); err != nil || out != "from the host\n" {
		t.Fatalf("bind mount after the rootfs changed: %q, %v", out, err)
	}
}

// TestRestoreAbort: Abort while held kills the restored tree and leaves
// nothing; the id and the image are usable again.
func TestRestoreAbort(t *testing.T) {
	c, images := checkpointed(t)
	r, err := container.StartRestore(ctx(t), c.restoreOpts(images, c.id))
	if err != nil {
		t.Fatal(err)
	}
	pid := r.Pid()
	if err := r.Abort(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if alive(pid) {
		t.Fatalf("restored root %d survives Abort", pid)
	}
	if err := r.Finish(ctx(t)); err == nil || !strings.Contains(err.Error(), "aborted") {
		t.Errorf("Finish after Abort: %v", err)
	}
	c.assertGone(c.id, nil)

	before := c.last()
	c.restore(images, c.id)
	c.waitCount(before + 3)
}

// TestRestoreHoldTimeout: a hold nobody ends is aborted by itself.
func TestRestoreHoldTimeout(t *testing.T) {
	c, images := checkpointed(t)
	opts := c.restoreOpts(images, c.id)
	opts.HoldTimeout = 300 * time.Millisecond
	r, err := container.StartRestore(ctx(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-r.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("the hold did not time out")
	}
	if err := r.Finish(ctx(t)); err == nil || !strings.Contains(err.Error(), "setup-namespaces") {
		t.Fatalf("Finish after the timeout: %v", err)
	}
	if alive(r.Pid()) {
		t.Fatalf("restored root %d survives the timeout", r.Pid())
	}
	c.assertGone(c.id, nil)
}
