package tmpfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ckpt-dev/ckpt/runtime/image"
	"golang.org/x/sys/unix"
)

// needRoot: these tests mount tmpfs and make device nodes.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatal("CI: needs root (mount, mknod)")
	}
	t.Skip("SKIPPED, NOT TESTED: needs root (mount, mknod)")
}

// newTmpfs mounts a tmpfs with mode=755 on a new directory.
func newTmpfs(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "mode=755,size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

func devOf(t *testing.T, p string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Dev
}

// look records the tmpfs at dir as the checkpoint does, through
// /proc/self/root.
func look(t *testing.T, dir string, children map[string]bool) (tmpfsContent, bool) {
	t.Helper()
	root, err := openTmpfsRoot(os.Getpid(), dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	dev := devOf(t, dir)
	c, ok, err := readTmpfs(root, dev, 0o755, 0, 0, children)
	if err != nil {
		t.Fatal(err)
	}
	return c, ok
}

// devLike fills dir as runc fills a container's /dev: device nodes,
// symlinks, directories with other modes and owners, and mountpoints with
// mounts on them.
func devLike(t *testing.T, dir string) map[string]bool {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	p := func(n string) string { return filepath.Join(dir, n) }
	must(unix.Mknod(p("null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(unix.Chmod(p("null"), 0o666))
	must(unix.Mknod(p("loop0"), unix.S_IFBLK|0o660, int(unix.Mkdev(7, 0))))
	must(unix.Chmod(p("loop0"), 0o660))
	must(unix.Lchown(p("loop0"), 0, 6))
	must(os.Symlink("/proc/self/fd", p("fd")))
	must(os.Symlink("pts/ptmx", p("ptmx")))
	must(unix.Mkfifo(p("initctl"), 0o600))
	must(os.Mkdir(p("mqueue"), 0o755))
	must(os.Mkdir(p("pts"), 0o755))
	must(os.Mkdir(p("net"), 0o700))
	must(unix.Mknod(p("net/tun"), unix.S_IFCHR|0o600, int(unix.Mkdev(10, 200))))
	must(os.WriteFile(p("console"), nil, 0o644))
	must(os.WriteFile(p("sticky"), nil, 0o644))
	must(unix.Chmod(p("sticky"), 0o1644|unix.S_ISGID))
	must(unix.Lchown(p("net"), 5, 7))
	// The mounts on it hide these inodes.
	must(unix.Mount("tmpfs", p("pts"), "tmpfs", 0, "size=4k"))
	t.Cleanup(func() { unix.Unmount(p("pts"), unix.MNT_DETACH) })
	must(unix.Mount("/dev/null", p("console"), "", unix.MS_BIND, ""))
	t.Cleanup(func() { unix.Unmount(p("console"), unix.MNT_DETACH) })
	// Older times than now, so that a recreation must set them.
	for _, n := range []string{"net/tun", "net", "null", "fd"} {
		must(setMtime(p(n), 1_000_000_007))
	}
	must(setMtime(dir, 2_000_000_009))
	return map[string]bool{"pts": true, "console": true}
}

// recordedDevLike is a /dev-like tmpfs, the mounts on it and what ckpt
// records of it.
func recordedDevLike(t *testing.T) (dir string, children map[string]bool, c tmpfsContent) {
	t.Helper()
	needRoot(t)
	dir = newTmpfs(t)
	children = devLike(t, dir)
	c, ok := look(t, dir, children)
	if !ok {
		t.Fatal("a /dev-like tmpfs was refused")
	}
	return dir, children, c
}

// TestTmpfsRecordAndRecreate: what ckpt records of a /dev-like tmpfs, made
// again in a new tmpfs, records the same; every kind of inode keeps its
// type, mode, owner, device number, target and time.
func TestTmpfsRecordAndRecreate(t *testing.T) {
	_, children, c := recordedDevLike(t)
	byPath := map[string]image.TmpfsEntry{}
	for _, e := range c.entries {
		byPath[e.Path] = e
	}
	checks := map[string]string{
		"null":    "char 666 0:0 1:3",
		"loop0":   "block 660 0:6 7:0",
		"fd":      "symlink -> /proc/self/fd",
		"ptmx":    "symlink -> pts/ptmx",
		"initctl": "fifo 600 0:0 0:0",
		"net":     "dir 700 5:7 0:0",
		"net/tun": "char 600 0:0 10:200",
		"pts":     "dir 755 0:0 0:0 mountpoint",
		"console": "file 755 0:0 0:0 mountpoint",
		"sticky":  "file 3644 0:0 0:0",
	}
	for path, want := range checks {
		e, ok := byPath[path]
		if !ok {
			t.Errorf("%s not recorded", path)
			continue
		}
		got := fmt.Sprintf("%s %o %d:%d %d:%d", e.Type, e.Mode, e.UID, e.GID, e.Major, e.Minor)
		if e.Type == "symlink" {
			got = "symlink -> " + e.Target
		}
		if e.Mountpoint {
			got += " mountpoint"
		}
		if got != want {
			t.Errorf("%s recorded as %q, want %q", path, got, want)
		}
	}
	if len(c.entries) != len(checks)+1 { // mqueue
		t.Errorf("%d entries recorded: %+v", len(c.entries), c.entries)
	}
	if byPath["net/tun"].MtimeNs != 1_000_000_007 || byPath["pts"].MtimeNs != 0 || c.rootMtime != 2_000_000_009 {
		t.Errorf("times recorded: tun %d, pts %d, root %d", byPath["net/tun"].MtimeNs, byPath["pts"].MtimeNs, c.rootMtime)
	}
	if !c.equal(c) {
		t.Fatal("a look is not equal to itself")
	}

	dst := newTmpfs(t)
	if err := populateTmpfs(dst, image.FreshTmpfs{Key: "ckpt-tmpfs:/dev", Entries: c.entries, RootMtimeNs: c.rootMtime}); err != nil {
		t.Fatal(err)
	}
	again, ok := look(t, dst, children)
	if !ok || !again.equal(c) {
		t.Fatalf("recreated tmpfs differs:\n got %+v (ok %t)\nwant %+v", again, ok, c)
	}
}

// TestTmpfsRefused: content ckpt cannot recreate exactly is left to CRIU's
// archive.
func TestTmpfsRefused(t *testing.T) {
	needRoot(t)
	tests := []struct {
		name     string
		fill     func(t *testing.T, dir string) error
		children map[string]bool
	}{
		{name: "a file with data", fill: func(t *testing.T, d string) error { return os.WriteFile(d+"/f", []byte("x"), 0o644) }},
		{name: "a hard link", fill: func(t *testing.T, d string) error {
			if err := os.WriteFile(d+"/a", nil, 0o644); err != nil {
				return err
			}
			return os.Link(d+"/a", d+"/b")
		}},
		{name: "a socket", fill: func(t *testing.T, d string) error { return unix.Mknod(d+"/s", unix.S_IFSOCK|0o600, 0) }},
		{name: "too many inodes", fill: func(t *testing.T, d string) error {
			for i := 0; i <= maxTmpfsEntries; i++ {
				if err := os.WriteFile(fmt.Sprintf("%s/f%d", d, i), nil, 0o644); err != nil {
					return err
				}
			}
			return nil
		}},
		{name: "a chmod of the root", fill: func(t *testing.T, d string) error { return os.Chmod(d, 0o700) }},
		{name: "a mount it does not hold", fill: func(*testing.T, string) error { return nil }, children: map[string]bool{"pts": true}},
		{name: "a mount mountinfo did not show", fill: func(t *testing.T, d string) error {
			if err := os.Mkdir(d+"/m", 0o755); err != nil {
				return err
			}
			t.Cleanup(func() { unix.Unmount(d+"/m", unix.MNT_DETACH) })
			return unix.Mount("tmpfs", d+"/m", "tmpfs", 0, "size=4k")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := newTmpfs(t)
			if err := tt.fill(t, dir); err != nil {
				t.Fatal(err)
			}
			if c, ok := look(t, dir, tt.children); ok {
				t.Fatalf("recorded as recreatable: %+v", c)
			}
		})
	}
}

// TestTmpfsRootThroughSymlink: a mountpoint reached through a symlink the
// container made is not looked at.
func TestTmpfsRootThroughSymlink(t *testing.T) {
	needRoot(t)
	dir := newTmpfs(t)
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	if _, err := openTmpfsRoot(os.Getpid(), link); err == nil {
		t.Fatal("opened a tmpfs root through a symlink")
	}
	if _, ok, err := lookAtTmpfs(os.Getpid(), link, "rw,mode=755", 0, 0, nil); ok || err != nil {
		t.Fatalf("looked at a tmpfs through a symlink: ok %t, %v", ok, err)
	}
}

// TestCheckUnchanged: the second look, once frozen, finds any change.
func TestCheckUnchanged(t *testing.T) {
	dir, children, c := recordedDevLike(t)
	dev := devOf(t, dir)
	ft := image.FreshTmpfs{Key: "ckpt-tmpfs:" + dir, Mountpoints: []string{dir}, Data: "size=1m,mode=755",
		Entries: c.entries, RootMtimeNs: c.rootMtime, Major: int(unix.Major(dev)), Minor: int(unix.Minor(dev))}
	if err := CheckUnchanged(os.Getpid(), []image.FreshTmpfs{ft}); err != nil {
		t.Fatalf("unchanged tmpfs: %v", err)
	}
	changes := []func() error{
		func() error { return unix.Chmod(dir+"/null", 0o600) },
		func() error { return setMtime(dir+"/net", 3_000_000_000) },
		func() error { return os.WriteFile(dir+"/new", nil, 0o644) },
	}
	for i, change := range changes {
		if err := change(); err != nil {
			t.Fatal(err)
		}
		err := CheckUnchanged(os.Getpid(), []image.FreshTmpfs{ft})
		if !errors.Is(err, ErrChanged) || !strings.Contains(err.Error(), dir) {
			t.Fatalf("change %d: %v", i, err)
		}
		// Each change is checked alone.
		c, _ := look(t, dir, children)
		ft.Entries, ft.RootMtimeNs = c.entries, c.rootMtime
	}
}

// TestPopulateTmpfsRefusesForeignEntries: ckpt.json is read from an image
// anyone may have edited; an entry that would leave the tmpfs, or that
// ckpt never records, fails the restore before anything is made outside.
func TestPopulateTmpfsRefusesForeignEntries(t *testing.T) {
	needRoot(t)
	tests := []image.TmpfsEntry{
		{Path: "../escape", Type: "file"},
		{Path: "/abs", Type: "file"},
		{Path: "a/../b", Type: "file"},
		{Path: "nodir/x", Type: "file"},
		{Path: "f", Type: "file", Mode: unix.S_IFDIR | 0o755},
		{Path: "w", Type: "socket"},
	}
	for _, e := range tests {
		t.Run(e.Path+" "+e.Type, func(t *testing.T) {
			dir := newTmpfs(t)
			err := populateTmpfs(dir, image.FreshTmpfs{Key: "k", Entries: []image.TmpfsEntry{e}})
			if err == nil {
				t.Fatal("accepted")
			}
			if ents, _ := os.ReadDir(filepath.Dir(dir)); len(ents) != 1 {
				t.Fatalf("made %v beside the tmpfs", ents)
			}
		})
	}
}
