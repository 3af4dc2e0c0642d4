package container

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/ckpt-dev/ckpt/runtime/image"
	"golang.org/x/sys/unix"
)

// initStdio describes the init's fds 0-2 for the checkpoint. runc's
// `run -d` hands the caller's stdio straight to the init, so they are
// often files on the host (a log file) that the container's mount
// namespace does not contain; CRIU cannot dump such a file ("Can't lookup
// mount") unless told it is external. ckpt marks it external as
// file[mnt_id:inode], and restore plugs in a new file through inherit_fd.
func initStdio(pid int) ([]image.Stdio, error) {
	mnts, err := mountIDs(pid)
	if err != nil {
		return nil, err
	}
	out := make([]image.Stdio, 3)
	for fd := range 3 {
		p := fmt.Sprintf("/proc/%d/fd/%d", pid, fd)
		link, err := os.Readlink(p)
		if err != nil {
			return nil, fmt.Errorf("init fd %d: %w", fd, err)
		}
		out[fd] = image.Stdio{Fd: fd, Link: link}
		if !strings.HasPrefix(link, "/") {
			continue // pipe:[..], socket:[..], anon_inode:..
		}
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			return nil, fmt.Errorf("init fd %d (%s): %w", fd, link, err)
		}
		if !externalCandidate(st) {
			continue
		}
		mnt, err := fdMountID(pid, fd)
		if err != nil {
			return nil, err
		}
		if !mnts[mnt] {
			out[fd].External = fmt.Sprintf("file[%x:%x]", mnt, st.Ino)
		}
	}
	return out, nil
}

// externalCandidate: regular files and the mem devices (/dev/null, zero,
// ...). Ttys are left to CRIU's tty code (shell-job, orphan pts master).
func externalCandidate(st unix.Stat_t) bool {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		return true
	case unix.S_IFCHR:
		return unix.Major(st.Rdev) == 1
	}
	return false
}

// mountIDs are the mount ids of pid's mount namespace.
func mountIDs(pid int) (map[int]bool, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		return nil, err
	}
	ids := map[int]bool{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		f, _, _ := strings.Cut(sc.Text(), " ")
		if id, err := strconv.Atoi(f); err == nil {
			ids[id] = true
		}
	}
	return ids, sc.Err()
}

func fdMountID(pid, fd int) (int, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "mnt_id:"); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, fmt.Errorf("no mnt_id in /proc/%d/fdinfo/%d", pid, fd)
}

// ttyWinsize reads the window size of the init's terminal (its stdin) when
// the caller did not give one. O_NOCTTY: opening it must not make the tty
// ours; it is closed again before CRIU looks at the tty.
func ttyWinsize(pid int) *image.WindowSize {
	fd, err := unix.Open(fmt.Sprintf("/proc/%d/fd/0", pid), unix.O_RDONLY|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	defer unix.Close(fd)
	ws, err := unix.IoctlGetWinsize(fd, unix.TIOCGWINSZ)
	if err != nil || ws.Row == 0 || ws.Col == 0 {
		return nil
	}
	return &image.WindowSize{Rows: ws.Row, Cols: ws.Col}
}
