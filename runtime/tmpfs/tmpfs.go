package tmpfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/ckpt-dev/ckpt/runtime/image"
	"github.com/ckpt-dev/ckpt/runtime/runcstate"
	"github.com/moby/sys/mountinfo"
	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"
)

// CRIU archives every tmpfs with tar and gzip at dump and unpacks it at
// restore, ~4-5 ms a mount even when it holds nothing: runc's masked
// directories, an unused /dev/shm or /run, /dev. ckpt dumps such a tmpfs
// as an external mount instead, and restore mounts a new tmpfs with the
// same options in its place, with the inodes it held (tmpfs_content.go).
// Only what ckpt recreates exactly qualifies: every mount of the
// superblock at its root, with the same flags, options ckpt knows, no
// user namespace, no bind mount from the host, no data. The content is
// looked at before the request and again once the container is frozen.

// ErrChanged is a tmpfs that got content between ckpt's look and the
// freeze: the dump is redone with the content archived.
var ErrChanged = errors.New("a tmpfs ckpt recreates changed before the container was frozen")

// freshTmpfsKeyPrefix marks ckpt's external keys of recreated tmpfs mounts.
const freshTmpfsKeyPrefix = "ckpt-tmpfs:"

// mountFlags are the per-mount options ckpt recreates.
var mountFlags = map[string]uintptr{
	"rw": 0, "ro": unix.MS_RDONLY, "nosuid": unix.MS_NOSUID, "nodev": unix.MS_NODEV,
	"noexec": unix.MS_NOEXEC, "relatime": unix.MS_RELATIME, "noatime": unix.MS_NOATIME,
	"nodiratime": unix.MS_NODIRATIME, "strictatime": unix.MS_STRICTATIME,
}

// tmpfsOptions are the superblock options ckpt passes on as they are.
var tmpfsOptions = []string{"size", "nr_inodes", "mode", "uid", "gid", "inode64", "inode32", "huge", "mpol", "noswap"}

// capSysAdmin is CAP_SYS_ADMIN's bit in /proc/<pid>/status's Cap* masks.
const capSysAdmin = 21

// Recreatable lists the container's tmpfs superblocks that restore can
// recreate, from its mount table; maskedFiles are runc's masked files,
// binds of the container's /dev/null that the plan maps to the host's;
// resolve turns a mount destination into its path in the rootfs.
func Recreatable(pid int, cfg *configs.Config, maskedFiles []string, resolve func(string) string) ([]image.FreshTmpfs, error) {
	if cfg.Namespaces.Contains(configs.NEWUSER) {
		return nil, nil
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	mounts, err := mountinfo.GetMountsFromReader(f, nil)
	if err != nil {
		return nil, err
	}
	binds := map[string]bool{}
	for _, m := range cfg.Mounts {
		if m.IsBind() {
			binds[relDest(resolve, m.Destination)] = true
		}
	}
	masked := map[string]bool{}
	for _, m := range maskedFiles {
		masked[relDest(resolve, m)] = true
	}
	// A mountpoint's hidden inode is recreated as runc makes one: only a
	// process that can unmount what is on it could tell.
	bounding, err := runcstate.CapBounding(pid)
	if err != nil {
		return nil, err
	}
	mayUnmount := bounding&(1<<capSysAdmin) != 0
	return recreatableTmpfs(mounts, binds, masked, mayUnmount, func(m *mountinfo.Info, children map[string]bool) (tmpfsContent, bool, error) {
		return lookAtTmpfs(pid, m.Mountpoint, m.VFSOptions, m.Major, m.Minor, children)
	})
}

// lookAtTmpfs records the tmpfs mounted at mountpoint in the container of
// pid; ok is false where ckpt cannot recreate it.
func lookAtTmpfs(pid int, mountpoint, vfsOptions string, major, minor int, children map[string]bool) (_ tmpfsContent, ok bool, _ error) {
	root, err := openTmpfsRoot(pid, mountpoint)
	if err != nil {
		return tmpfsContent{}, false, nil // gone, or reached through a symlink: CRIU archives it
	}
	defer root.Close()
	mode, uid, gid := tmpfsRootAttrs(vfsOptions)
	dev := unix.Mkdev(uint32(major), uint32(minor))
	return readTmpfs(root, dev, mode, uid, gid, children)
}

func relDest(resolve func(string) string, dest string) string {
	if r := resolve(dest); r != "" {
		return r
	}
	return filepath.Clean(dest)
}

// tmpfsLook records a superblock's content at its first mount, given the
// mounts on it (paths relative to it); false when ckpt cannot recreate it.
type tmpfsLook func(m *mountinfo.Info, children map[string]bool) (tmpfsContent, bool, error)

// recreatableTmpfs groups mounts by tmpfs superblock and keeps the groups
// that qualify. Masked files, binds of one inode of /dev's tmpfs, are not
// mounts of it as far as ckpt is concerned: the plan dumps them as
// external already.
func recreatableTmpfs(mounts []*mountinfo.Info, binds, masked map[string]bool, mayUnmount bool, look tmpfsLook) ([]image.FreshTmpfs, error) {
	type sb struct{ major, minor int }
	groups := map[sb][]*mountinfo.Info{}
	var order []sb
	for _, m := range mounts {
		if m.FSType != "tmpfs" || (masked[m.Mountpoint] && m.Root != "/") {
			continue
		}
		k := sb{m.Major, m.Minor}
		if groups[k] == nil {
			order = append(order, k)
		}
		groups[k] = append(groups[k], m)
	}
	var out []image.FreshTmpfs
	for _, k := range order {
		g := groups[k]
		children, ok := recreatable(g, mounts, binds, mayUnmount)
		if !ok {
			continue
		}
		c, ok, err := look(g[0], children)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		t := image.FreshTmpfs{
			Key: freshTmpfsKeyPrefix + g[0].Mountpoint, Flags: g[0].Options, Data: tmpfsData(g[0].VFSOptions),
			Entries: c.entries, RootMtimeNs: c.rootMtime, Major: k.major, Minor: k.minor,
		}
		for _, m := range g {
			t.Mountpoints = append(t.Mountpoints, m.Mountpoint)
		}
		out = append(out, t)
	}
	return out, nil
}

// recreatable reports whether a superblock's mounts g can be replaced by
// binds of one new tmpfs, and which mounts sit on it (relative paths).
func recreatable(g, all []*mountinfo.Info, binds map[string]bool, mayUnmount bool) (map[string]bool, bool) {
	children := map[string]bool{}
	for _, m := range g {
		if m.Root != "/" || m.Mountpoint == "/" || m.Optional != "" || m.Options != g[0].Options || binds[m.Mountpoint] {
			return nil, false
		}
		for _, o := range all {
			switch {
			case o == m:
			case o.Mountpoint == m.Mountpoint:
				return nil, false // overmounted
			case strings.HasPrefix(o.Mountpoint, m.Mountpoint+"/"):
				// Mounts on it: one mount of the superblock only, and
				// hidden inodes no process can uncover.
				if len(g) > 1 || mayUnmount {
					return nil, false
				}
				if o.Parent == m.ID {
					children[strings.TrimPrefix(o.Mountpoint, m.Mountpoint+"/")] = true
				}
			}
		}
	}
	for _, f := range strings.Split(g[0].Options, ",") {
		if _, ok := mountFlags[f]; !ok {
			return nil, false
		}
	}
	for _, o := range strings.Split(g[0].VFSOptions, ",") {
		name, _, _ := strings.Cut(o, "=")
		if name != "rw" && name != "ro" && !slices.Contains(tmpfsOptions, name) {
			return nil, false
		}
	}
	return children, true
}

// tmpfsData is the mount data of superblock options: all but rw/ro, which
// are flags.
func tmpfsData(vfsOptions string) string {
	var keep []string
	for _, o := range strings.Split(vfsOptions, ",") {
		if o != "rw" && o != "ro" && o != "" {
			keep = append(keep, o)
		}
	}
	return strings.Join(keep, ",")
}

// tmpfsRootAttrs are the root directory's mode and owner a tmpfs with
// these options starts with: mode 1777 and root unless told otherwise.
func tmpfsRootAttrs(vfsOptions string) (mode, uid, gid uint32) {
	mode = 0o1777
	for _, o := range strings.Split(vfsOptions, ",") {
		k, v, _ := strings.Cut(o, "=")
		n, err := strconv.ParseUint(v, 0, 32)
		if err != nil {
			continue
		}
		switch k {
		case "mode":
			if m, err := strconv.ParseUint(v, 8, 32); err == nil {
				mode = uint32(m)
			}
		case "uid":
			uid = uint32(n)
		case "gid":
			gid = uint32(n)
		}
	}
	return mode, uid, gid
}

// CheckUnchanged is the look again, once the container is frozen.
func CheckUnchanged(pid int, ts []image.FreshTmpfs) error {
	for _, t := range ts {
		mp := t.Mountpoints[0]
		children := map[string]bool{}
		for _, e := range t.Entries {
			if e.Mountpoint {
				children[e.Path] = true
			}
		}
		now, ok, err := lookAtTmpfs(pid, mp, t.Data, t.Major, t.Minor, children)
		if err != nil || !ok || !now.equal(tmpfsContent{t.Entries, t.RootMtimeNs}) {
			return fmt.Errorf("%w: %s", ErrChanged, mp)
		}
	}
	return nil
}

// Mount mounts, on a new directory dir, a tmpfs as t describes,
// with the inodes it held, private so that nothing propagates from or to
// it.
func Mount(dir string, t image.FreshTmpfs) error {
	var flags uintptr
	for _, f := range strings.Split(t.Flags, ",") {
		v, ok := mountFlags[f]
		if !ok {
			return fmt.Errorf("tmpfs %s: unknown mount flag %q in the checkpoint", t.Key, f)
		}
		flags |= v
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", flags, t.Data); err != nil {
		os.Remove(dir)
		return fmt.Errorf("mount a new tmpfs for %s (%s; %s): %w", strings.Join(t.Mountpoints, ", "), t.Flags, t.Data, err)
	}
	if err := unix.Mount("", dir, "", unix.MS_PRIVATE, ""); err != nil {
		unmountAndRemove(dir)
		return fmt.Errorf("make %s private: %w", dir, err)
	}
	if err := populateTmpfs(dir, t); err != nil {
		unmountAndRemove(dir)
		return err
	}
	return nil
}

// unmountAndRemove undoes a failed Mount (the caller unmounts a
// successful one when it is done).
func unmountAndRemove(dir string) {
	unix.Unmount(dir, unix.MNT_DETACH)
	os.Remove(dir)
}
