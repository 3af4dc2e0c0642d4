package ctrd

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// buildShim builds cmd/containerd-shim-ckpt-v2 of the ckpt checkout the
// caller runs in, into dir: the main module's (the integration tests') or
// the one bench's go.mod replaces it with.
func buildShim(ctx context.Context, dir string) error {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go" // where Go is installed on the hosts ckpt supports
	}
	out, err := exec.CommandContext(ctx, goBin, "list", "-m", "-f", "{{.Dir}}", "github.com/ckpt-dev/ckpt").Output()
	root := strings.TrimSpace(string(out))
	if err != nil || root == "" {
		return fmt.Errorf("not inside the ckpt checkout (go list -m github.com/ckpt-dev/ckpt: %q, %v): cannot build the shim", root, err)
	}
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", filepath.Join(dir, "containerd-shim-ckpt-v2"), "./cmd/containerd-shim-ckpt-v2")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build the shim: %w\n%s", err, out)
	}
	return nil
}

// killShims kills the shims serving the daemon at address: those of
// tasks nobody deleted outlive containerd.
func killShims(address string) {
	for _, pid := range Shims(address) {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// Shims finds the serving shims of the daemon at address, ckpt's and
// containerd's runc shim (the benchmark runs both), by their command
// lines: container id -> pid.
func Shims(address string) map[string]int {
	shims := map[string]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
		if name := filepath.Base(args[0]); name != "containerd-shim-ckpt-v2" && name != "containerd-shim-runc-v2" {
			continue
		}
		if flagValue(args, "-address") == address {
			shims[flagValue(args, "-id")] = pid
		}
	}
	return shims
}

func flagValue(args []string, name string) string {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == name {
			return args[i+1]
		}
	}
	return ""
}

// removeRuncContainers force-deletes what runc still has under root.
func removeRuncContainers(root string) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return
	}
	for _, e := range entries {
		if e.IsDir() {
			exec.Command("runc", "--root", root, "delete", "--force", e.Name()).Run()
		}
	}
}

// removeRuncContainerIDs force-deletes the given containers under root.
func removeRuncContainerIDs(root string, ids []string) {
	for _, id := range ids {
		if isDir(filepath.Join(root, id)) {
			exec.Command("runc", "--root", root, "delete", "--force", id).Run()
		}
	}
}

// removeCgroups removes the namespace's parent cgroups (containerd's
// default cgroupsPath is /<namespace>/<id>; runc removes only the
// container's). rmdir fails on a cgroup still in use, which is left.
func removeCgroups(ns string) {
	dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", ns))
	if d := filepath.Join("/sys/fs/cgroup", ns); isDir(d) {
		dirs = append(dirs, d)
	}
	for _, d := range dirs {
		syscall.Rmdir(d)
	}
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// UnmountUnder detaches every mount below dir, deepest first.
func UnmountUnder(dir string) error {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	prefix := filepath.Clean(dir) + "/"
	var mps []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 4 && strings.HasPrefix(unescape(f[4]), prefix) {
			mps = append(mps, unescape(f[4]))
		}
	}
	sort.Slice(mps, func(i, j int) bool { return len(mps[i]) > len(mps[j]) })
	var errs []error
	for _, mp := range mps {
		if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", mp, err))
		}
	}
	return errors.Join(errs...)
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
