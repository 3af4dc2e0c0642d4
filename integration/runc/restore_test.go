package runc_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ckpt-dev/ckpt/integration/internal/testutil"
	"github.com/ckpt-dev/ckpt/runtime/container"
	"github.com/ckpt-dev/ckpt/runtime/image"
	"github.com/opencontainers/cgroups"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// TestRestoreUnderAnotherID restores under a new id; runc exec works in
// it. (A process runc exec'd before the checkpoint is refused:
// TestCheckpointRefusesExecProcesses.)
func TestRestoreUnderAnotherID(t *testing.T) {
	c := newCtr(t, nil)
	c.start()
	old := c.id
	images := c.checkpoint(container.CheckpointOptions{})
	before := c.last()
	c.restore(images, old+"-b")
	if st, _ := c.state(old); st != "" {
		t.Errorf("old id still known to runc: %s", st)
	}
	c.waitCount(before + 5)
	c.assertContinuous()
	out, err := c.exec("sh", "-c", "echo $((6*7)); ls /proc | grep -c '^[0-9]'")
	if err != nil || !strings.HasPrefix(out, "42\n") {
		t.Fatalf("runc exec: %v: %q", err, out)
	}
}

// TestMounts covers bind mounts whose destination is under a symlink in
// the rootfs, and a bind mount nested in another one whose source is new at
// restore (its mountpoint must be created in the new source).
func TestMounts(t *testing.T) {
	host := t.TempDir()
	data, data2, sub := filepath.Join(host, "data"), filepath.Join(host, "data2"), filepath.Join(host, "sub")
	nested := filepath.Join(host, "nested")
	for _, d := range []string{data, data2, sub, nested} {
		os.Mkdir(d, 0o755)
	}
	os.WriteFile(filepath.Join(data, "f"), []byte("data\n"), 0o644)
	os.WriteFile(filepath.Join(data2, "f"), []byte("data2\n"), 0o644)
	os.WriteFile(filepath.Join(sub, "g"), []byte("sub\n"), 0o644)
	os.WriteFile(filepath.Join(nested, "h"), []byte("nested\n"), 0o644)
	bind := func(src, dst string) specs.Mount {
		return specs.Mount{Source: src, Destination: dst, Type: "bind", Options: []string{"rbind", "rw"}}
	}
	c := newCtr(t, func(s *specs.Spec) {
		s.Mounts = append(s.Mounts, bind(data, "/data"), bind(nested, "/data/nested"), bind(sub, "/link/sub"))
	})
	// /link is a symlink in the rootfs: the mount is really at /real/sub.
	os.Mkdir(filepath.Join(c.bundle, "rootfs", "real"), 0o755)
	if err := os.Symlink("/real", filepath.Join(c.bundle, "rootfs", "link")); err != nil {
		t.Fatal(err)
	}
	c.start()
	check := func(want string) {
		t.Helper()
		out, err := c.exec("cat", "/data/f", "/data/nested/h", "/real/sub/g")
		if err != nil || out != want {
			t.Fatalf("mounts in the container: %v: %q, want %q", err, out, want)
		}
	}
	check("data\nnested\nsub\n")
	images := c.checkpoint(container.CheckpointOptions{})

	// Restore with a new source for /data that has no mountpoint for the
	// nested mount yet.
	c.editSpec(func(s *specs.Spec) {
		for i := range s.Mounts {
			if s.Mounts[i].Destination == "/data" {
				s.Mounts[i].Source = data2
			}
		}
	})
	before := c.last()
	c.restore(images, c.id)
	c.waitCount(before + 3)
	check("data2\nnested\nsub\n")
	if fi, err := os.Stat(filepath.Join(data2, "nested")); err != nil || !fi.IsDir() {
		t.Errorf("nested mountpoint not created in the new source: %v", err)
	}
}

// TestReadOnlyRootfs restores a container whose rootfs is read-only (its
// FIFO lives on a tmpfs, whose content CRIU restores).
func TestReadOnlyRootfs(t *testing.T) {
	c := newCtr(t, func(s *specs.Spec) {
		s.Root.Readonly = true
		s.Mounts = append(s.Mounts, specs.Mount{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev"}})
	})
	c.start()
	for cycle := 0; cycle < 2; cycle++ {
		images := c.checkpoint(container.CheckpointOptions{})
		before := c.last()
		c.restore(images, c.id)
		c.waitCount(before + 3)
	}
	c.assertContinuous()
	if out, err := c.exec("touch", "/x"); err == nil {
		t.Fatalf("rootfs writable after restore: %s", out)
	}
}

// TestExternalNetNS runs the container in a network namespace made with
// `ip netns add`: it is not dumped, and the restored container is in the
// same namespace again, two cycles in a row.
func TestExternalNetNS(t *testing.T) {
	requireAll(t)
	testutil.Require(t, "ip")
	name := fmt.Sprintf("ckpt-it-%d-%d", os.Getpid(), seq.Add(1))
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	nsPath := "/run/netns/" + name
	c := newCtr(t, func(s *specs.Spec) {
		for i, ns := range s.Linux.Namespaces {
			if ns.Type == specs.NetworkNamespace {
				s.Linux.Namespaces[i].Path = nsPath
			}
		}
	})
	var want unix.Stat_t
	if err := unix.Stat(nsPath, &want); err != nil {
		t.Fatal(err)
	}
	c.start()
	for cycle := 0; cycle < 2; cycle++ {
		images := c.checkpoint(container.CheckpointOptions{})
		before := c.last()
		pid := c.restore(images, c.id)
		var got unix.Stat_t
		if err := unix.Stat("/proc/"+itoa(pid)+"/ns/net", &got); err != nil {
			t.Fatal(err)
		}
		if got.Ino != want.Ino {
			t.Fatalf("cycle %d: restored into netns %d, want %s's %d", cycle, got.Ino, nsPath, want.Ino)
		}
		c.waitCount(before + 3)
	}
}

// TestRestoreIntoOtherCgroup restores with a different cgroupsPath. CRIU
// moves the restored tree there (criu itself never joins the cgroup), or,
// with manage-cgroups-mode ignore, where CRIU moves nothing, criu joins it
// first and the tree is born there.
func TestRestoreIntoOtherCgroup(t *testing.T) {
	for _, mode := range []string{"", "ignore"} {
		t.Run("mode="+mode, func(t *testing.T) {
			c := newCtr(t, nil)
			c.start()
			images := c.checkpoint(container.CheckpointOptions{CgroupsMode: mode})
			cgPath := "/ckpt-it-other-" + c.id
			c.editSpec(func(s *specs.Spec) { s.Linux.CgroupsPath = cgPath })
			before := c.last()
			pid := c.restore(images, c.id)
			c.waitCount(before + 3)
			assertInCgroup(t, pid, cgPath)
			paths := c.cgroupPaths(c.id)
			c.destroy(c.id)
			c.assertGone(c.id, paths)
		})
	}
}

// TestCgroupYard: the host's /sys/fs/cgroup serves as CRIU's cgroup yard
// (no cgroup mount of CRIU's own) where it holds every hierarchy, and only
// then; and only for an image whose hierarchies are all there: one that
// names another is restored with CRIU's own yard, and nothing is left in
// /sys/fs/cgroup.
func TestCgroupYard(t *testing.T) {
	c := newCtr(t, nil)
	c.start()
	images := c.checkpoint(container.CheckpointOptions{})
	md, err := image.ReadMetadataPath(images)
	if err != nil {
		t.Fatal(err)
	}
	yardLine := "Opening /sys/fs/cgroup as cg yard"
	restore := func(images string) string {
		t.Helper()
		opts := c.restoreOpts(images, c.id)
		before := c.last()
		if _, err := container.Restore(ctx(t), opts); err != nil {
			t.Fatalf("restore: %v", err)
		}
		c.waitCount(before + 3)
		return readFile(filepath.Join(opts.WorkPath, "restore.log"))
	}

	complete, why := hostYardComplete(t)
	t.Logf("/sys/fs/cgroup complete: %v %s", complete, why)
	if !complete {
		// A nested container's /sys/fs/cgroup may lack the hybrid v2
		// hierarchy, a unified-only host has no such layout: CRIU keeps
		// its own yard.
		if len(md.CgroupHierarchies) != 0 {
			t.Fatalf("an incomplete /sys/fs/cgroup recorded as the yard: %q", md.CgroupHierarchies)
		}
		if log := restore(images); strings.Contains(log, yardLine) {
			t.Fatal("an incomplete /sys/fs/cgroup was handed to CRIU as its yard")
		}
		return
	}
	if len(md.CgroupHierarchies) == 0 {
		t.Fatal("no cgroup hierarchies recorded: the host's /sys/fs/cgroup was not used as CRIU's yard")
	}
	if log := restore(images); !strings.Contains(log, yardLine) {
		t.Fatalf("restore did not use /sys/fs/cgroup as the cgroup yard; restore.log:\n%s", tail(log))
	}

	images = c.checkpoint(container.CheckpointOptions{})
	md, err = image.ReadMetadataPath(images)
	if err != nil {
		t.Fatal(err)
	}
	md.CgroupHierarchies = append(md.CgroupHierarchies, "ckpt-it-no-such-hierarchy")
	if err := image.WriteMetadata(images, md); err != nil {
		t.Fatal(err)
	}
	if log := restore(images); strings.Contains(log, yardLine) {
		t.Fatal("an image naming a hierarchy the yard lacks was restored with the host's yard")
	}
	if _, err := os.Stat("/sys/fs/cgroup/ckpt-it-no-such-hierarchy"); err == nil {
		t.Fatal("a directory was left in /sys/fs/cgroup")
	}
	paths := c.cgroupPaths(c.id)
	c.destroy(c.id)
	c.assertGone(c.id, paths)
}

// hostYardComplete says, from /proc/self/cgroup and /proc/self/mountinfo,
// whether /sys/fs/cgroup/<name> is a whole mount of every hierarchy, named
// as CRIU names them.
func hostYardComplete(t *testing.T) (bool, string) {
	if cgroups.IsCgroup2UnifiedMode() {
		return false, "(unified-only host)"
	}
	whole := map[string]bool{}
	for _, l := range strings.Split(readFile("/proc/self/mountinfo"), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[3] == "/" {
			whole[f[4]] = true
		}
	}
	for _, l := range strings.Split(strings.TrimSpace(readFile("/proc/self/cgroup")), "\n") {
		parts := strings.SplitN(l, ":", 3)
		name := strings.ReplaceAll(parts[1], "name=", "")
		if name == "" {
			name = "unified"
		}
		if !whole["/sys/fs/cgroup/"+name] {
			return false, "(no whole mount at /sys/fs/cgroup/" + name + ")"
		}
	}
	return true, ""
}

// assertInCgroup checks that pid is in cgPath in every hierarchy runc
// manages: each v1 controller, or v2 on a unified-only host.
func assertInCgroup(t *testing.T, pid int, cgPath string) {
	t.Helper()
	cg := readFile("/proc/" + itoa(pid) + "/cgroup")
	for _, l := range strings.Split(strings.TrimSpace(cg), "\n") {
		parts := strings.SplitN(l, ":", 3)
		if len(parts) == 3 && (parts[1] != "" || cgroups.IsCgroup2UnifiedMode()) && parts[2] != cgPath {
			t.Fatalf("restored init's cgroups:\n%s\nwant %s in every hierarchy", cg, cgPath)
		}
	}
}

// TestLeaveRunning checkpoints without stopping the container and restores
// the image as a second container next to it.
func TestLeaveRunning(t *testing.T) {
	c := newCtr(t, nil)
	c.start()
	images := c.checkpoint(container.CheckpointOptions{LeaveRunning: true})
	if st, _ := c.state(c.id); st != "running" {
		t.Fatalf("after --leave-running: %q", st)
	}
	c.waitCount(c.last() + 3)

	out2 := filepath.Join(c.bundle, "out2.log")
	f := openAppend(t, out2)
	opts := c.restoreOpts(images, c.id+"-copy")
	opts.Stdio = [3]*os.File{nil, f, f}
	pid, err := container.Restore(ctx(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.destroy(c.id + "-copy") })
	waitFor(t, "the copy to count", func() bool { n := countsIn(out2); return len(n) > 3 })
	if st, rpid := c.state(c.id + "-copy"); st != "running" || rpid != pid {
		t.Fatalf("copy: %s %d", st, rpid)
	}
	c.waitCount(c.last() + 3)
}

func itoa(n int) string { return strconv.Itoa(n) }
