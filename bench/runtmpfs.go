package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

// CRIU keeps what it learns about the kernel (~250 probes, 15-40 ms) in
// /run/criu.kdat, and only where /run is a tmpfs, so that a reboot drops
// it. Every systemd host mounts /run so; a VM or container without systemd
// may not, and there every CRIU run of every target re-probes. The
// benchmark measures what a production host would see: where /run is not
// a tmpfs it runs itself again in a private mount namespace with a new
// tmpfs on /run, which its containerd, both shims, runc and CRIU inherit.
// The host's /run is untouched. -host-run measures with /run as it is.

// privateRunEnv marks the benchmark process that runs on the private /run.
const privateRunEnv = "CKPT_BENCH_PRIVATE_RUN"

// runIsTmpfs reports whether CRIU can keep its kernel-feature cache.
func runIsTmpfs() bool {
	var st unix.Statfs_t
	return unix.Statfs("/run", &st) == nil && st.Type == unix.TMPFS_MAGIC
}

// runState says, for the results, how /run was for this run.
func runState() string {
	switch {
	case os.Getenv(privateRunEnv) != "":
		return "/run a private tmpfs (the host's is not one), so CRIU keeps its kernel-feature cache"
	case runIsTmpfs():
		return "/run a tmpfs, so CRIU keeps its kernel-feature cache"
	default:
		return "/run not a tmpfs (-host-run): every CRIU run re-detects kernel features"
	}
}

// reexecOnPrivateRun runs the benchmark again, with the same arguments, in
// a new mount namespace, and exits with its status; it returns only when
// no re-run is needed: /run is a tmpfs already, or this is the re-run.
func reexecOnPrivateRun() error {
	if os.Getenv(privateRunEnv) != "" {
		return preparePrivateRun()
	}
	if runIsTmpfs() {
		return nil
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self, os.Args[1:]...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), privateRunEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	// An interrupt reaches the re-run through the terminal's process group
	// or through this forward; the re-run still writes what it measured.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, unix.SIGTERM)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("run the benchmark in a private mount namespace: %w", err)
	}
	go func() {
		for s := range sigs {
			cmd.Process.Signal(s)
		}
	}()
	err = cmd.Wait()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		os.Exit(exit.ExitCode())
	}
	if err != nil {
		return err
	}
	os.Exit(0)
	return nil
}

// preparePrivateRun, in the re-run, keeps its mounts from the host's
// namespace and mounts the tmpfs on /run.
func preparePrivateRun() error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make the mount namespace private: %w", err)
	}
	if err := unix.Mount("tmpfs", "/run", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755,size=64m"); err != nil {
		return fmt.Errorf("mount a tmpfs on /run: %w", err)
	}
	// Stdin, and whatever else the caller left open, came from the host's
	// namespace: CRIU cannot place a file of a mount it does not see, and
	// raw CRIU's process tree would inherit them.
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return fmt.Errorf("mark inherited fds close-on-exec: %w", err)
	}
	null, err := os.Open(os.DevNull)
	if err != nil {
		return err
	}
	defer null.Close()
	return unix.Dup2(int(null.Fd()), 0)
}
