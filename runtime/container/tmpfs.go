package container

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/ckpt-dev/ckpt/runtime/image"
	"github.com/moby/sys/mountinfo"
	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"
)

// CRIU archives every tmpfs with tar and gzip at dump and unpacks it at
// restore, ~4-5 ms a mount even when it holds nothing: runc's masked
// directories, an unused /dev/shm or /run. ckpt dumps an empty tmpfs as an
// external mount instead, and restore mounts a new empty tmpfs with the
// same options in its place. Only what ckpt recreates exactly qualifies:
// every mount of the superblock at its root, with the same flags, options
// ckpt knows, no user namespace, no bind mount from the host. Emptiness is
// checked before the request and again once the container is frozen.

// errTmpfsChanged is a tmpfs that got content between ckpt's look and the
// freeze: the dump is redone with the content archived.
var errTmpfsChanged = errors.New("an empty tmpfs got content before the container was frozen")

// freshTmpfsKeyPrefix marks ckpt's external keys of empty tmpfs mounts.
const freshTmpfsKeyPrefix = "ckpt-tmpfs:"

// mountFlags are the per-mount options ckpt recreates.
var mountFlags = map[string]uintptr{
	"rw": 0, "ro": unix.MS_RDONLY, "nosuid": unix.MS_NOSUID, "nodev": unix.MS_NODEV,
	"noexec": unix.MS_NOEXEC, "relatime": unix.MS_RELATIME, "noatime": unix.MS_NOATIME,
	"nodiratime": unix.MS_NODIRATIME, "strictatime": unix.MS_STRICTATIME,
}

// tmpfsOptions are the superblock options ckpt passes on as they are.
var tmpfsOptions = []string{"size", "nr_inodes", "mode", "uid", "gid", "inode64", "inode32", "huge", "mpol", "noswap"}

// freshTmpfs lists the container's empty tmpfs superblocks that restore
// can recreate, from its mount table.
func freshTmpfs(pid int, cfg *configs.Config) ([]image.FreshTmpfs, error) {
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
	resolve := resolveIn(cfg.Rootfs)
	for _, m := range cfg.Mounts {
		if m.IsBind() {
			binds[relDest(resolve, m.Destination)] = true
		}
	}
	return emptyTmpfs(mounts, binds, func(m *mountinfo.Info) (bool, error) {
		return pristine(fmt.Sprintf("/proc/%d/root%s", pid, m.Mountpoint), m)
	})
}

func relDest(resolve func(string) string, dest string) string {
	if r := resolve(dest); r != "" {
		return r
	}
	return filepath.Clean(dest)
}

// emptyTmpfs groups mounts by tmpfs superblock and keeps the groups that
// qualify; empty reports whether a mount is as a new tmpfs would be.
func emptyTmpfs(mounts []*mountinfo.Info, binds map[string]bool, empty func(*mountinfo.Info) (bool, error)) ([]image.FreshTmpfs, error) {
	type sb struct{ major, minor int }
	groups := map[sb][]*mountinfo.Info{}
	var order []sb
	for _, m := range mounts {
		if m.FSType != "tmpfs" {
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
		if !recreatable(g, mounts, binds) {
			continue
		}
		ok, err := empty(g[0])
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		t := image.FreshTmpfs{
			Key: freshTmpfsKeyPrefix + g[0].Mountpoint, Flags: g[0].Options, Data: tmpfsData(g[0].VFSOptions),
			Major: k.major, Minor: k.minor,
		}
		for _, m := range g {
			t.Mountpoints = append(t.Mountpoints, m.Mountpoint)
		}
		out = append(out, t)
	}
	return out, nil
}

// recreatable reports whether a superblock's mounts g can be replaced by
// binds of one new tmpfs.
func recreatable(g, all []*mountinfo.Info, binds map[string]bool) bool {
	for _, m := range g {
		if m.Root != "/" || m.Mountpoint == "/" || m.Optional != "" || m.Options != g[0].Options || binds[m.Mountpoint] {
			return false
		}
		// Another mount on it or below it: an overmount, or content.
		if slices.ContainsFunc(all, func(o *mountinfo.Info) bool {
			return o != m && (o.Mountpoint == m.Mountpoint || strings.HasPrefix(o.Mountpoint, m.Mountpoint+"/"))
		}) {
			return false
		}
	}
	for _, f := range strings.Split(g[0].Options, ",") {
		if _, ok := mountFlags[f]; !ok {
			return false
		}
	}
	for _, o := range strings.Split(g[0].VFSOptions, ",") {
		name, _, _ := strings.Cut(o, "=")
		if name != "rw" && name != "ro" && !slices.Contains(tmpfsOptions, name) {
			return false
		}
	}
	return true
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

// pristine reports whether the directory at path is the root of the tmpfs
// m and as a new mount with m's options would be: no entries, and the
// mode and owner the options give (a chmod of the root is content too).
func pristine(path string, m *mountinfo.Info) (bool, error) {
	f, err := os.OpenFile(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, nil // gone or not a directory: CRIU archives it
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil || st.Dev != unix.Mkdev(uint32(m.Major), uint32(m.Minor)) {
		return false, nil
	}
	mode, uid, gid := tmpfsRootAttrs(m.VFSOptions)
	if st.Mode&0o7777 != mode || st.Uid != uid || st.Gid != gid {
		return false, nil
	}
	names, err := f.Readdirnames(1)
	if errors.Is(err, io.EOF) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	return len(names) == 0, nil
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

// checkStillEmpty is the look again, once the container is frozen.
func checkStillEmpty(pid int, ts []image.FreshTmpfs) error {
	for _, t := range ts {
		mp := t.Mountpoints[0]
		m := &mountinfo.Info{Mountpoint: mp, VFSOptions: t.Data, Major: t.Major, Minor: t.Minor}
		if ok, err := pristine(fmt.Sprintf("/proc/%d/root%s", pid, mp), m); err != nil || !ok {
			return fmt.Errorf("%w: %s", errTmpfsChanged, mp)
		}
	}
	return nil
}

// mountFreshTmpfs mounts, on a new directory dir, an empty tmpfs as t
// describes, private so that nothing propagates from or to it.
func mountFreshTmpfs(dir string, t image.FreshTmpfs) error {
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
		unmountCriuRoot(dir)
		return fmt.Errorf("make %s private: %w", dir, err)
	}
	return nil
}
