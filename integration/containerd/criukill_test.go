package containerd_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ckpt-dev/ckpt/integration/containerd/harness"
	"github.com/ckpt-dev/ckpt/runtime/container"
	"github.com/containerd/containerd/v2/client"
)

// criuOf returns the shim's child running criu's binary that is not the
// restored root (rst_sibling makes the root the shim's child too).
func criuOf(shim, root int) []int {
	var out []int
	tids, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", shim))
	for _, tid := range tids {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", shim, tid.Name()))
		for _, f := range strings.Fields(string(b)) {
			p, _ := strconv.Atoi(f)
			exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", p))
			if p != root && strings.HasSuffix(exe, "/criu") {
				out = append(out, p)
			}
		}
	}
	return out
}

// TestShimRestoreCriuKilled kills criu while a restore through the shim is
// held between Create and Start (the tree's first task exists and holds
// the RPC socket's peer end, so criu's death sends no EOF): Start fails in
// bounded time saying criu was killed, the task is deletable, and no criu,
// restored task, mount, cgroup or runc state is left.
func TestShimRestoreCriuKilled(t *testing.T) {
	d := daemon(t)
	ctx := testContext(t, d)
	c := newContainer(t, d, ctx, counter)
	task, statusC, _ := startCounter(t, d, ctx, c)
	dir := checkpointExit(t, ctx, task, statusC)

	nc := newContainer(t, d, ctx, counter)
	ntask, err := nc.NewTask(ctx, streams(d, nil, &syncBuffer{}, nil, false), client.WithRestoreImagePath(dir))
	if err != nil {
		t.Fatal(err)
	}
	root := int(ntask.Pid())
	shim := harness.Shims(d.Address)[nc.ID()]
	if shim == 0 || root == 0 {
		t.Fatalf("shim %d, restored root %d", shim, root)
	}
	criu := criuOf(shim, root)
	if len(criu) != 1 {
		t.Fatalf("criu processes of the shim: %v, want one", criu)
	}
	nstatusC, err := ntask.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(criu[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	start := time.Now()
	err = ntask.Start(sctx)
	took := time.Since(start)
	cancel()
	if err == nil {
		t.Fatal("a restore whose criu was killed started")
	}
	t.Logf("Start failed after %s: %v", took.Round(time.Millisecond), err)
	if took > 20*time.Second {
		t.Fatalf("Start took %s", took)
	}
	if !strings.Contains(err.Error(), "killed by signal 9") {
		t.Errorf("the error does not say criu was killed: %v", err)
	}
	waitStatus(t, nstatusC, 10*time.Second)
	if _, err := ntask.Delete(ctx); err != nil {
		t.Fatalf("delete the task: %v", err)
	}

	deadline := time.Now().Add(10 * time.Second)
	for _, p := range []int{root, criu[0]} {
		for {
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", p)); os.IsNotExist(err) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("process %d still exists", p)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if _, err := os.Stat(filepath.Join(d.RuncRoot, nc.ID())); err == nil {
		t.Error("runc state remains")
	}
	wd, err := container.WorkDir(d.RuncRoot, nc.ID())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(wd); err == nil {
		t.Errorf("restore work dir %s remains", wd)
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(mi), "\n") {
		if strings.Contains(l, wd) || strings.Contains(l, filepath.Join(d.RuncRoot, nc.ID())) {
			t.Errorf("mount remains: %s", l)
		}
	}
	cgs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", d.Namespace, nc.ID()))
	v2, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", d.Namespace, nc.ID()))
	for _, p := range append(cgs, v2...) {
		t.Errorf("cgroup remains: %s", p)
	}
	if left := criuOf(shim, 0); len(left) > 0 {
		t.Errorf("criu processes remain under the shim: %v", left)
	}
}

// TestShimKilledInRestore: SIGKILL of the shim while a restore is held
// between Create and Start. containerd's cleanup after the dead shim (the
// shim's delete action) removes what the restore left: the tree's tasks,
// which outlive criu, the work dir with its mounts, and the cgroups.
func TestShimKilledInRestore(t *testing.T) {
	d := daemon(t)
	ctx := testContext(t, d)
	c := newContainer(t, d, ctx, counter)
	task, statusC, _ := startCounter(t, d, ctx, c)
	dir := checkpointExit(t, ctx, task, statusC)
	nc := newContainer(t, d, ctx, counter)
	ntask, err := nc.NewTask(ctx, streams(d, nil, &syncBuffer{}, nil, false), client.WithRestoreImagePath(dir))
	if err != nil {
		t.Fatal(err)
	}
	root := int(ntask.Pid())
	shim := harness.Shims(d.Address)[nc.ID()]
	wd, err := container.WorkDir(d.RuncRoot, nc.ID())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(wd); err != nil {
		t.Fatalf("no work dir while the restore is held: %v", err)
	}
	if err := syscall.Kill(shim, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	gone := func() []string {
		var left []string
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", root)); err == nil {
			left = append(left, fmt.Sprintf("restored root %d", root))
		}
		if _, err := os.Stat(wd); err == nil {
			left = append(left, wd)
		}
		mi, _ := os.ReadFile("/proc/self/mountinfo")
		if strings.Contains(string(mi), wd) {
			left = append(left, "mounts under "+wd)
		}
		cgs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", d.Namespace, nc.ID()))
		v2, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", d.Namespace, nc.ID()))
		left = append(left, append(cgs, v2...)...)
		if _, err := os.Stat(filepath.Join(d.RuncRoot, nc.ID())); err == nil {
			left = append(left, "runc state dir")
		}
		return left
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		left := gone()
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("20 s after the shim was killed, left: %v", left)
		}
		time.Sleep(100 * time.Millisecond)
	}
	ntask.Delete(ctx) // containerd may have removed it already
}
