package runc_test

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ckpt-dev/ckpt/runtime/container"
	"github.com/ckpt-dev/ckpt/runtime/criu"
	"github.com/ckpt-dev/ckpt/runtime/image"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// tmpfsSpec adds an empty /run and a /data that gets a file, both tmpfs
// with options of their own.
func tmpfsSpec(s *specs.Spec) {
	s.Mounts = append(s.Mounts,
		specs.Mount{Destination: "/run", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=750", "size=8m"}},
		specs.Mount{Destination: "/data", Type: "tmpfs", Source: "tmpfs", Options: []string{"noexec", "size=4m"}},
	)
}

// tmpfsMounts are the tmpfs mounts of pid's mountinfo (the roots of their
// superblocks, not the files runc binds from them), mountpoint -> per-mount
// options and superblock options.
func tmpfsMounts(t *testing.T, pid int) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, l := range strings.Split(readFile("/proc/"+itoa(pid)+"/mountinfo"), "\n") {
		f := strings.Fields(l)
		sep := slices.Index(f, "-")
		if len(f) < 6 || sep < 0 || sep+3 >= len(f) || f[sep+1] != "tmpfs" || f[3] != "/" {
			continue
		}
		out[f[4]] = f[5] + " " + f[sep+3]
	}
	return out
}

func freshMountpoints(md *image.Metadata) []string {
	var out []string
	for _, t := range md.FreshTmpfs {
		out = append(out, t.Mountpoints...)
	}
	return out
}

// devListing lists the inodes of the container's /dev as CRIU's archive
// of it would keep them, one line each; mounts on it by name only.
func devListing(t *testing.T, pid int) []string {
	t.Helper()
	root := "/proc/" + itoa(pid) + "/root/dev"
	var top unix.Stat_t
	if err := unix.Lstat(root, &top); err != nil {
		t.Fatal(err)
	}
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel := strings.TrimPrefix(strings.TrimPrefix(p, root), "/")
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		if st.Dev != top.Dev {
			out = append(out, rel+" (mount)")
			return fs.SkipDir
		}
		target, _ := os.Readlink(p)
		out = append(out, fmt.Sprintf("%s %o %d:%d rdev %d:%d %q mtime %d", rel, st.Mode, st.Uid, st.Gid,
			unix.Major(st.Rdev), unix.Minor(st.Rdev), target, st.Mtim.Nano()))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRecreatedTmpfs: a tmpfs that holds no data (an empty one, /dev with
// its device nodes) is not archived but comes back new, with the same
// mount flags, options and inodes; one with data is archived.
func TestRecreatedTmpfs(t *testing.T) {
	c := newCtr(t, tmpfsSpec)
	c.start()
	if out, err := c.exec("sh", "-c", "echo kept > /data/f"); err != nil {
		t.Fatalf("exec: %v\n%s", err, out)
	}
	_, pid := c.state(c.id)
	before := tmpfsMounts(t, pid)
	devBefore := devListing(t, pid)

	images := c.checkpoint(container.CheckpointOptions{})
	md, err := image.ReadMetadataPath(images)
	if err != nil {
		t.Fatal(err)
	}
	fresh := freshMountpoints(md)
	for _, mp := range []string{"/run", "/dev/shm", "/dev"} {
		if !slices.Contains(fresh, mp) {
			t.Errorf("%s was archived (recreated: %q)", mp, fresh)
		}
	}
	if slices.Contains(fresh, "/data") {
		t.Errorf("/data, which holds data, was left out of the checkpoint")
	}
	// One archive for each tmpfs CRIU dumped: those mounted once and left
	// in (a left-out superblock may have several mountpoints).
	archives, _ := filepath.Glob(filepath.Join(images, "tmpfs-dev-*.tar.gz.img"))
	if want := len(before) - len(fresh); len(archives) != want {
		ents, _ := os.ReadDir(images)
		t.Errorf("%d tmpfs archives, want %d (%d tmpfs mounts, %d left out): %v", len(archives), want, len(before), len(fresh), ents)
	}
	last := c.last()
	pid = c.restore(images, c.id)
	c.waitCount(last + 3)
	// ckpt's own mounts of the new tmpfs are gone; the container's binds
	// of them remain.
	if mi := readFile("/proc/self/mountinfo"); strings.Contains(mi, filepath.Join(c.root, c.id, "tmpfs-")) {
		t.Errorf("ckpt's tmpfs mounts left on the host:\n%s", mi)
	}
	after := tmpfsMounts(t, pid)
	for mp, want := range before {
		if after[mp] != want {
			t.Errorf("%s: %q after restore, was %q", mp, after[mp], want)
		}
	}
	if devAfter := devListing(t, pid); !slices.Equal(devAfter, devBefore) {
		t.Errorf("/dev after restore:\n%s\nwas:\n%s", strings.Join(devAfter, "\n"), strings.Join(devBefore, "\n"))
	}
	if out, err := c.exec("cat", "/data/f"); err != nil || strings.TrimSpace(out) != "kept" {
		t.Errorf("archived tmpfs content: %q, %v", out, err)
	}
	if out, err := c.exec("sh", "-c", "echo new > /run/f && cat /run/f && ls /dev/shm | wc -l && echo x > /dev/null && head -c 4 /dev/zero | wc -c"); err != nil || out != "new\n0\n4\n" {
		t.Errorf("new tmpfs in the restored container: %q, %v", out, err)
	}
	paths := c.cgroupPaths(c.id)
	c.destroy(c.id)
	c.assertGone(c.id, paths)
}

// TestRecreatedTmpfsChangedBeforeFreeze: a change to a tmpfs ckpt would
// recreate, made after ckpt looked and before the container froze, is not
// lost: ckpt sees it at the freeze and dumps again with the tmpfs
// archived. Here an empty /run gets a file and /dev a symlink.
func TestRecreatedTmpfsChangedBeforeFreeze(t *testing.T) {
	c := newCtr(t, tmpfsSpec)
	c.start()
	changed := false
	images := c.checkpoint(container.CheckpointOptions{
		OnStage: func(_ context.Context, stage criu.Stage, pid int) error {
			if stage == criu.PreDump && !changed {
				changed = true
				root := "/proc/" + itoa(pid) + "/root"
				if err := os.Symlink("null", root+"/dev/late"); err != nil {
					return err
				}
				return os.WriteFile(root+"/run/late", []byte("late\n"), 0o644)
			}
			return nil
		},
	})
	if !changed {
		t.Fatal("pre-dump never came")
	}
	md, err := image.ReadMetadataPath(images)
	if err != nil {
		t.Fatal(err)
	}
	if fresh := freshMountpoints(md); slices.Contains(fresh, "/run") || slices.Contains(fresh, "/dev") {
		t.Fatalf("a tmpfs changed before the freeze was left out: %q", fresh)
	}
	last := c.last()
	c.restore(images, c.id)
	c.waitCount(last + 3)
	if out, err := c.exec("sh", "-c", "cat /run/late; readlink /dev/late"); err != nil || out != "late\nnull\n" {
		t.Fatalf("changes made before the freeze: %q, %v", out, err)
	}
}
