package runc_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ckpt-dev/ckpt/runtime/container"
	"github.com/ckpt-dev/ckpt/runtime/criu"
	"github.com/ckpt-dev/ckpt/runtime/image"
	specs "github.com/opencontainers/runtime-spec/specs-go"
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

// TestEmptyTmpfs: an empty tmpfs is not archived but comes back new, with
// the same mount flags and options; one with content is archived.
func TestEmptyTmpfs(t *testing.T) {
	c := newCtr(t, tmpfsSpec)
	c.start()
	if out, err := c.exec("sh", "-c", "echo kept > /data/f"); err != nil {
		t.Fatalf("exec: %v\n%s", err, out)
	}
	_, pid := c.state(c.id)
	before := tmpfsMounts(t, pid)

	images := c.checkpoint(container.CheckpointOptions{})
	md, err := image.ReadMetadataPath(images)
	if err != nil {
		t.Fatal(err)
	}
	fresh := freshMountpoints(md)
	for _, mp := range []string{"/run", "/dev/shm"} {
		if !slices.Contains(fresh, mp) {
			t.Errorf("empty %s was archived (fresh: %q)", mp, fresh)
		}
	}
	for _, mp := range []string{"/data", "/dev"} {
		if slices.Contains(fresh, mp) {
			t.Errorf("%s, which has content, was left out of the checkpoint", mp)
		}
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
	if out, err := c.exec("cat", "/data/f"); err != nil || strings.TrimSpace(out) != "kept" {
		t.Errorf("archived tmpfs content: %q, %v", out, err)
	}
	if out, err := c.exec("sh", "-c", "echo new > /run/f && cat /run/f && ls /dev/shm | wc -l"); err != nil || out != "new\n0\n" {
		t.Errorf("new tmpfs in the restored container: %q, %v", out, err)
	}
	paths := c.cgroupPaths(c.id)
	c.destroy(c.id)
	c.assertGone(c.id, paths)
}

// TestEmptyTmpfsFilledBeforeFreeze: content written to an empty tmpfs
// after ckpt looked and before the container froze is not lost: ckpt sees
// it at the freeze and dumps again with the tmpfs archived.
func TestEmptyTmpfsFilledBeforeFreeze(t *testing.T) {
	c := newCtr(t, tmpfsSpec)
	c.start()
	filled := false
	images := c.checkpoint(container.CheckpointOptions{
		OnStage: func(_ context.Context, stage criu.Stage, pid int) error {
			if stage == criu.PreDump && !filled {
				filled = true
				return os.WriteFile("/proc/"+itoa(pid)+"/root/run/late", []byte("late\n"), 0o644)
			}
			return nil
		},
	})
	if !filled {
		t.Fatal("pre-dump never came")
	}
	md, err := image.ReadMetadataPath(images)
	if err != nil {
		t.Fatal(err)
	}
	if fresh := freshMountpoints(md); slices.Contains(fresh, "/run") {
		t.Fatalf("/run, filled before the freeze, was left out: %q", fresh)
	}
	last := c.last()
	c.restore(images, c.id)
	c.waitCount(last + 3)
	if out, err := c.exec("cat", "/run/late"); err != nil || out != "late\n" {
		t.Fatalf("content written before the freeze: %q, %v", out, err)
	}
}
