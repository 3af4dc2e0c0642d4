package container

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"
)

// mountCriuRoot binds the rootfs onto dir. CRIU wants its root to be a
// mount point whose parent is not overmounted, which a bundle's rootfs
// need not be. The bind is made private so that nothing CRIU or the
// mountpoint preparation mounts below it propagates back to the rootfs.
func mountCriuRoot(rootfs, dir string) error {
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(rootfs, dir, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		os.Remove(dir)
		return fmt.Errorf("bind %s on %s: %w", rootfs, dir, err)
	}
	if err := unix.Mount("", dir, "", unix.MS_PRIVATE|unix.MS_REC, ""); err != nil {
		unmountCriuRoot(dir)
		return fmt.Errorf("make %s private: %w", dir, err)
	}
	return nil
}

// readonlyCriuRoot makes the criu-root bind read-only, for a read-only
// rootfs: CRIU binds its root as it finds it and does not restore the
// root mount's read-only flag. It comes after the mountpoints are made.
func readonlyCriuRoot(dir string) error {
	if err := unix.Mount("", dir, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		return fmt.Errorf("make %s read-only: %w", dir, err)
	}
	return nil
}

func unmountCriuRoot(dir string) error {
	if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
		return fmt.Errorf("unmount %s: %w", dir, err)
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// prepareMountpoints creates, under root, the mountpoints the container's
// mounts need, as runc's create would: CRIU mounts onto existing
// mountpoints only. Bind mounts are mounted for the time of the
// preparation, so that mountpoints of mounts nested in them are created in
// their source (runc issue 2748), then unmounted again: CRIU mounts them
// itself. Cgroup mounts and mounts on a tmpfs are skipped (CRIU restores
// tmpfs contents and the v1 cgroup tmpfs). Every path is resolved inside
// root (symlinks cannot lead out of it).
func prepareMountpoints(root string, mounts []*configs.Mount) (retErr error) {
	rootFd, err := os.OpenFile(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer rootFd.Close()

	var bound []string
	defer func() {
		for i := len(bound) - 1; i >= 0; i-- {
			if err := unmountIn(rootFd, bound[i]); err != nil && retErr == nil {
				retErr = err
			}
		}
	}()
	for _, m := range mounts {
		if m.Device == "cgroup" || onTmpfs(m.Destination, mounts) {
			continue
		}
		h, err := ensureMountpoint(rootFd, m)
		if err != nil {
			return fmt.Errorf("mountpoint for %s: %w", m.Destination, err)
		}
		if m.Device == "bind" {
			err = unix.Mount(m.Source, procFd(h), "", unix.MS_BIND|unix.MS_REC, "")
			if err == nil {
				bound = append(bound, m.Destination)
			} else {
				err = fmt.Errorf("bind %s on %s to prepare nested mountpoints: %w", m.Source, m.Destination, err)
			}
		}
		h.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// ensureMountpoint opens dest in root, creating it when missing: an empty
// file for a bind mount of a file, a directory otherwise.
func ensureMountpoint(root *os.File, m *configs.Mount) (*os.File, error) {
	h, err := pathrs.OpenatInRoot(root, m.Destination)
	if err == nil {
		return h, nil
	}
	if !errors.Is(err, unix.ENOENT) {
		return nil, err
	}
	isFile := false
	if m.Device == "bind" {
		fi, err := os.Stat(m.Source)
		if err != nil {
			return nil, fmt.Errorf("bind mount source: %w", err)
		}
		isFile = !fi.IsDir()
	}
	if !isFile {
		return pathrs.MkdirAllHandle(root, m.Destination, 0o755)
	}
	parent, err := pathrs.MkdirAllHandle(root, filepath.Dir(m.Destination), 0o755)
	if err != nil {
		return nil, err
	}
	defer parent.Close()
	fd, err := unix.Openat(int(parent.Fd()), filepath.Base(m.Destination), unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
	if err != nil && err != unix.EEXIST {
		return nil, err
	}
	if err == nil {
		unix.Close(fd)
	}
	return pathrs.OpenatInRoot(root, m.Destination)
}

// unmountIn detaches the mount at dest in root. The path is looked up
// afresh: a handle taken before the mount refers to what is under it.
func unmountIn(root *os.File, dest string) error {
	h, err := pathrs.OpenatInRoot(root, dest)
	if err != nil {
		return fmt.Errorf("unmount %s: %w", dest, err)
	}
	defer h.Close()
	if err := unix.Unmount(procFd(h), unix.MNT_DETACH); err != nil && err != unix.EINVAL {
		return fmt.Errorf("unmount %s: %w", dest, err)
	}
	return nil
}

func procFd(f *os.File) string { return fmt.Sprintf("/proc/self/fd/%d", f.Fd()) }

// onTmpfs reports whether path lies below one of the tmpfs mounts.
func onTmpfs(path string, mounts []*configs.Mount) bool {
	for _, m := range mounts {
		if m.Device == "tmpfs" && strings.HasPrefix(path, strings.TrimSuffix(m.Destination, "/")+"/") {
			return true
		}
	}
	return false
}

// criuYardPrefix starts the dir CRIU makes in its work dir to mount the
// cgroup hierarchies in when it is given no cgroup yard (a host whose
// /sys/fs/cgroup does not hold every hierarchy whole, e.g. a container's
// private cgroup namespace). CRIU unmounts it as it exits; a criu that is
// killed leaves it mounted.
const criuYardPrefix = ".criu.cgyard."

// unmountCRIUYards unmounts and removes the cgroup yards a killed criu
// left in workDir. Nothing is done where none is left.
func unmountCRIUYards(workDir string) error {
	yards, err := filepath.Glob(filepath.Join(workDir, criuYardPrefix+"*"))
	if err != nil {
		return err
	}
	var errs []error
	for _, y := range yards {
		errs = append(errs, removeUnmounted(y))
	}
	return errors.Join(errs...)
}
