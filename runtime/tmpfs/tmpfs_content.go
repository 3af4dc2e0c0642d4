package tmpfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/ckpt-dev/ckpt/runtime/image"
	"golang.org/x/sys/unix"
)

// A tmpfs like /dev holds no data, only inodes runc made: device nodes,
// symlinks, and the mountpoints of /dev/pts, /dev/shm, /dev/mqueue and
// /dev/console. CRIU archives it all the same, ~5 ms of tar and gzip while
// the container is frozen and ~4 ms to unpack. ckpt records such inodes in
// ckpt.json instead and creates them again in the new tmpfs. What it
// records is what CRIU's archive keeps: type, mode, owner, device number,
// symlink target and modification time. A mountpoint's own inode is
// hidden by its mount; ckpt recreates it as runc makes one, which only a
// process that could unmount the mount could tell apart, so a container
// that may hold CAP_SYS_ADMIN keeps the archive.

// maxTmpfsEntries bounds what ckpt.json records: a tmpfs with more is in
// use for something else than device nodes, and CRIU archives it.
const maxTmpfsEntries = 256

// tmpfsContent is what a tmpfs's inodes are, as restore creates them again.
type tmpfsContent struct {
	entries   []image.TmpfsEntry
	rootMtime int64
}

// equal compares two looks at one tmpfs.
func (c tmpfsContent) equal(o tmpfsContent) bool {
	return c.rootMtime == o.rootMtime && slices.Equal(c.entries, o.entries)
}

// readTmpfs records the tmpfs whose root directory root is open, on
// device dev, with the mounts on it at children (relative paths); ok is
// false when ckpt cannot recreate it exactly. The container runs while
// ckpt looks: the walk goes by file descriptors, every name looked up
// without following a symlink, every directory checked to be the inode
// it was listed as, so a directory swapped for a symlink cannot lead it
// out of the tmpfs.
func readTmpfs(root *os.File, dev uint64, rootMode, rootUID, rootGID uint32, children map[string]bool) (c tmpfsContent, ok bool, err error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(root.Fd()), &st); err != nil || st.Dev != dev || st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return c, false, nil // gone or not what mountinfo said: CRIU archives it
	}
	if st.Mode&0o7777 != rootMode || st.Uid != rootUID || st.Gid != rootGID {
		return c, false, nil // a chmod of the root is content too
	}
	seen := 0
	var walk func(dir *os.File, rel string) (bool, error)
	walk = func(dir *os.File, rel string) (bool, error) {
		names, err := dir.Readdirnames(-1)
		if err != nil {
			return false, err
		}
		slices.Sort(names)
		for _, n := range names {
			r := filepath.Join(rel, n)
			if len(c.entries) == maxTmpfsEntries {
				return false, nil
			}
			var st unix.Stat_t
			if err := unix.Fstatat(int(dir.Fd()), n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return false, nil // changing under us: CRIU archives it
			}
			if children[r] {
				seen++
				e := image.TmpfsEntry{Path: r, Type: "file", Mode: 0o755, Mountpoint: true}
				if st.Mode&unix.S_IFMT == unix.S_IFDIR {
					e.Type = "dir"
				}
				c.entries = append(c.entries, e)
				continue
			}
			e, ok := entryOf(int(dir.Fd()), n, r, &st, dev)
			if !ok {
				return false, nil
			}
			c.entries = append(c.entries, e)
			if e.Type != "dir" {
				continue
			}
			sub, ok := openSubdir(dir, n, &st)
			if !ok {
				return false, nil
			}
			ok, err = walk(sub, r)
			sub.Close()
			if !ok || err != nil {
				return false, err
			}
		}
		return true, nil
	}
	// Readdirnames reads from the descriptor's offset: a second look
	// through the same file would see nothing.
	dir, ok := openSubdir(root, ".", &st)
	if !ok {
		return c, false, nil
	}
	defer dir.Close()
	if ok, err := walk(dir, ""); !ok || err != nil {
		return tmpfsContent{}, false, err
	}
	if seen != len(children) {
		return tmpfsContent{}, false, nil // a mount below a mount: not ours to record
	}
	if len(c.entries) > 0 {
		c.rootMtime = st.Mtim.Nano()
	}
	return c, true, nil
}

// openSubdir opens the directory name in dir without following a
// symlink, and only if it is still the inode st describes.
func openSubdir(dir *os.File, name string, st *unix.Stat_t) (*os.File, bool) {
	fd, err := unix.Openat(int(dir.Fd()), name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, false
	}
	var now unix.Stat_t
	if err := unix.Fstat(fd, &now); err != nil || now.Dev != st.Dev || now.Ino != st.Ino {
		unix.Close(fd)
		return nil, false
	}
	return os.NewFile(uintptr(fd), name), true
}

// entryOf records one inode that is not a mountpoint: name in the
// directory dirFd, rel from the tmpfs's root.
func entryOf(dirFd int, name, rel string, st *unix.Stat_t, dev uint64) (image.TmpfsEntry, bool) {
	e := image.TmpfsEntry{Path: rel, Mode: st.Mode & 0o7777, UID: st.Uid, GID: st.Gid, MtimeNs: st.Mtim.Nano()}
	if st.Dev != dev {
		return e, false // a mount mountinfo did not show us
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR && st.Nlink != 1 {
		return e, false // hard links are content CRIU keeps
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		e.Type = "dir"
	case unix.S_IFREG:
		if st.Size != 0 {
			return e, false
		}
		e.Type = "file"
	case unix.S_IFLNK:
		buf := make([]byte, unix.PathMax)
		n, err := unix.Readlinkat(dirFd, name, buf)
		if err != nil || n == len(buf) {
			return e, false
		}
		e.Type, e.Target = "symlink", string(buf[:n])
	case unix.S_IFCHR, unix.S_IFBLK:
		e.Type = "char"
		if st.Mode&unix.S_IFMT == unix.S_IFBLK {
			e.Type = "block"
		}
		e.Major, e.Minor = unix.Major(st.Rdev), unix.Minor(st.Rdev)
	case unix.S_IFIFO:
		e.Type = "fifo"
	default:
		return e, false // a socket is a live object
	}
	return e, true
}

// openTmpfsRoot opens mountpoint, a path as the container's mountinfo
// shows it, in the container's root, following no symlink on the way.
func openTmpfsRoot(pid int, mountpoint string) (*os.File, error) {
	root, err := os.Open(fmt.Sprintf("/proc/%d/root", pid))
	if err != nil {
		return nil, err
	}
	defer root.Close()
	fd, err := unix.Openat2(int(root.Fd()), mountpoint, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), mountpoint), nil
}

// populateTmpfs creates t's entries in dir, the root of a new tmpfs:
// inodes in order, then modification times deepest first, because making
// an entry changes its directory's time. Entries come from ckpt.json:
// each must lie under a directory made before it.
func populateTmpfs(dir string, t image.FreshTmpfs) error {
	dirs := map[string]bool{".": true}
	for _, e := range t.Entries {
		if !filepath.IsLocal(e.Path) || filepath.Clean(e.Path) != e.Path || !dirs[filepath.Dir(e.Path)] || e.Mode&^0o7777 != 0 {
			return fmt.Errorf("tmpfs %s: entry %q (mode %o) is not one ckpt recorded", t.Key, e.Path, e.Mode)
		}
		p := filepath.Join(dir, e.Path)
		if err := makeEntry(p, e); err != nil {
			return fmt.Errorf("tmpfs %s: create %s %q: %w", t.Key, e.Type, e.Path, err)
		}
		if e.Type == "dir" {
			dirs[e.Path] = true
		}
		if err := unix.Lchown(p, int(e.UID), int(e.GID)); err != nil {
			return fmt.Errorf("tmpfs %s: chown %q: %w", t.Key, e.Path, err)
		}
		// After the chown, which clears setuid and setgid.
		if e.Type != "symlink" {
			if err := unix.Chmod(p, e.Mode); err != nil {
				return fmt.Errorf("tmpfs %s: chmod %q: %w", t.Key, e.Path, err)
			}
		}
	}
	for i := len(t.Entries) - 1; i >= 0; i-- {
		if e := t.Entries[i]; e.MtimeNs != 0 {
			if err := setMtime(filepath.Join(dir, e.Path), e.MtimeNs); err != nil {
				return fmt.Errorf("tmpfs %s: set the time of %q: %w", t.Key, e.Path, err)
			}
		}
	}
	if t.RootMtimeNs != 0 {
		return setMtime(dir, t.RootMtimeNs)
	}
	return nil
}

func makeEntry(p string, e image.TmpfsEntry) error {
	dev := int(unix.Mkdev(e.Major, e.Minor))
	switch e.Type {
	case "dir":
		return unix.Mkdir(p, 0o700)
	case "file":
		fd, err := unix.Open(p, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err == nil {
			unix.Close(fd)
		}
		return err
	case "symlink":
		return unix.Symlink(e.Target, p)
	case "char":
		return unix.Mknod(p, unix.S_IFCHR|0o600, dev)
	case "block":
		return unix.Mknod(p, unix.S_IFBLK|0o600, dev)
	case "fifo":
		return unix.Mknod(p, unix.S_IFIFO|0o600, 0)
	}
	return errors.New("unknown type")
}

// setMtime sets a modification time and leaves the access time as it is,
// on a symlink itself.
func setMtime(p string, ns int64) error {
	ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, unix.NsecToTimespec(ns)}
	return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
}
