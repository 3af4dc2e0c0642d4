// Package testutil holds what ckpt's integration tests share: the rule for
// skipping outside CI, and a busybox root filesystem built from Debian's
// busybox-static (no registry images).
package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// InCI reports whether the tests run in CI, where nothing may be skipped.
func InCI() bool { return os.Getenv("CI") != "" }

// Require skips the test when a real component is missing, loudly and only
// outside CI; in CI the missing component fails the test.
func Require(t testing.TB, what ...string) {
	t.Helper()
	var missing []string
	for _, w := range what {
		switch w {
		case "root":
			if os.Geteuid() != 0 {
				missing = append(missing, "root")
			}
		default:
			if _, err := exec.LookPath(w); err != nil {
				missing = append(missing, w)
			}
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := fmt.Sprintf("needs %s (run scripts/setup.sh as root)", strings.Join(missing, ", "))
	if InCI() {
		t.Fatalf("CI: %s", msg)
	}
	t.Skipf("SKIPPED, NOT TESTED: %s", msg)
}

// BusyboxPath is where Debian's busybox-static installs its binary.
const BusyboxPath = "/bin/busybox"

// Rootfs builds a minimal root filesystem in dir: a static busybox with a
// link for every applet, and the directories a container needs.
func Rootfs(t testing.TB, dir string) {
	t.Helper()
	Require(t, BusyboxPath)
	if err := BuildRootfs(dir); err != nil {
		t.Fatal(err)
	}
}

// BuildRootfs is Rootfs for programs that are not tests (the soak run).
func BuildRootfs(dir string) error {
	for _, d := range []string{"bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "root", "run", "var/tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	bb := filepath.Join(dir, "bin", "busybox")
	data, err := os.ReadFile(BusyboxPath)
	if err != nil {
		return err
	}
	if err := os.WriteFile(bb, data, 0o755); err != nil {
		return err
	}
	out, err := exec.Command(BusyboxPath, "--list").Output()
	if err != nil {
		return fmt.Errorf("busybox --list: %w", err)
	}
	for _, applet := range strings.Fields(string(out)) {
		if applet == "busybox" {
			continue
		}
		link := filepath.Join(dir, "bin", applet)
		if err := os.Symlink("busybox", link); err != nil && !os.IsExist(err) {
			return err
		}
	}
	os.WriteFile(filepath.Join(dir, "etc", "passwd"), []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "etc", "group"), []byte("root:x:0:\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "etc", "hostname"), []byte("ckpt-test\n"), 0o644)
	return nil
}

// Cgroup is one line of /proc/PID/cgroup.
type Cgroup struct {
	// Controllers as the line names them: "" for v2, "name=systemd" for
	// a named v1 hierarchy.
	Controllers string
	// Dir is where the hierarchy is mounted under /sys/fs/cgroup, if it
	// is: a container may mount only a hybrid host's v1 hierarchies.
	Dir string
	// Path is the process's cgroup in the hierarchy.
	Path string
}

// CgroupsOf reads /proc/PID/cgroup; pid "self" is this process.
func CgroupsOf(pid string) ([]Cgroup, error) {
	data, err := os.ReadFile(filepath.Join("/proc", pid, "cgroup"))
	if err != nil {
		return nil, err
	}
	var st unix.Statfs_t
	unified := unix.Statfs("/sys/fs/cgroup", &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC
	var out []Cgroup
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		f := strings.SplitN(l, ":", 3)
		if len(f) != 3 {
			continue
		}
		dir := filepath.Join("/sys/fs/cgroup", strings.TrimPrefix(f[1], "name="))
		switch {
		case f[1] == "" && unified:
			dir = "/sys/fs/cgroup"
		case f[1] == "":
			dir = "/sys/fs/cgroup/unified"
		}
		out = append(out, Cgroup{Controllers: f[1], Dir: dir, Path: f[2]})
	}
	return out, nil
}
