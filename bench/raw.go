package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// rawCRIU is the floor: the criu CLI dumping and restoring the same
// process tree, in its own pid, uts and ipc namespaces, with no container
// runtime around it.
type rawCRIU struct {
	criu   string
	memhog string
}

func (r *rawCRIU) Name() string { return targetRawCRIU }

func (r *rawCRIU) Supports(w Workload) bool { return !w.Terminal }

func (r *rawCRIU) Run(ctx context.Context, w Workload, dir string) (Sample, error) {
	var s Sample
	args := make([]string, 0, len(w.Args)+1)
	switch w.Args[0] {
	case "/bin/sh":
		args = append(args, "/bin/busybox", "sh")
	case "/bin/memhog":
		args = append(args, r.memhog)
	default:
		args = append(args, w.Args[0])
	}
	args = append(args, w.Args[1:]...)
	// The shell's applets (sleep, seq) come from busybox.
	env := []string{"PATH=" + filepath.Join(dir, "applets")}
	if err := busyboxApplets(filepath.Join(dir, "applets")); err != nil {
		return s, err
	}
	out := filepath.Join(dir, "out")
	f, err := os.Create(out)
	if err != nil {
		return s, err
	}
	defer f.Close()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC}
	if err := cmd.Start(); err != nil {
		return s, err
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	if err := waitLine(ctx, out, w.Ready, 60*time.Second); err != nil {
		return s, err
	}

	img := filepath.Join(dir, "images")
	os.MkdirAll(img, 0o755)
	t0 := time.Now()
	if b, err := exec.CommandContext(ctx, r.criu, "dump", "-t", strconv.Itoa(cmd.Process.Pid), "-D", img, "-o", "dump.log", "-v2").CombinedOutput(); err != nil {
		return s, fmt.Errorf("criu dump: %w: %s%s", err, b, tail(filepath.Join(img, "dump.log")))
	}
	s.Checkpoint = time.Since(t0)
	cmd.Wait()
	s.ImageBytes = dirSize(img)

	// The restored tree is reparented away from us (-d); find it by its
	// output going on.
	mark := countLines(out)
	t0 = time.Now()
	if b, err := exec.CommandContext(ctx, r.criu, "restore", "-D", img, "-d", "-o", "restore.log", "-v2", "--pidfile", filepath.Join(dir, "restored.pid")).CombinedOutput(); err != nil {
		return s, fmt.Errorf("criu restore: %w: %s%s", err, b, tail(filepath.Join(img, "restore.log")))
	}
	s.Restore = time.Since(t0)
	if pid, err := readPid(filepath.Join(dir, "restored.pid")); err == nil {
		defer unix.Kill(pid, unix.SIGKILL)
	}
	if w.MemMiB > 0 {
		if err := waitFor(ctx, 10*time.Second, func() bool { return countLines(out) > mark }); err != nil {
			return s, fmt.Errorf("restored workload does not run: %w", err)
		}
	}
	s.Dump, s.Restored = readStats(img)
	return s, nil
}

func busyboxApplets(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, "sh")); err == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, a := range []string{"sh", "sleep", "seq", "echo"} {
		if err := os.Symlink("/bin/busybox", filepath.Join(dir, a)); err != nil && !os.IsExist(err) {
			return err
		}
	}
	return nil
}

func readPid(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

func countLines(path string) int {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		n++
	}
	return n
}

func waitLine(ctx context.Context, path, line string, timeout time.Duration) error {
	if line == "" {
		return nil
	}
	return waitFor(ctx, timeout, func() bool {
		b, _ := os.ReadFile(path)
		return strings.Contains(string(b), line)
	})
}

func waitFor(ctx context.Context, timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 8 {
		lines = lines[len(lines)-8:]
	}
	return "\n" + strings.Join(lines, "\n")
}
