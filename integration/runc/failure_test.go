package runc_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ckpt-dev/ckpt/runtime/container"
	"github.com/ckpt-dev/ckpt/runtime/criu"
	"github.com/ckpt-dev/ckpt/runtime/image"
	"github.com/ckpt-dev/ckpt/runtime/runcstate"
	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// checkpointed returns a container checkpointed (and so gone) and its
// images.
func checkpointed(t *testing.T) (*ctr, string) {
	c := newCtr(t, nil)
	c.start()
	return c, c.checkpoint(container.CheckpointOptions{})
}

// TestRestoreFailures: each broken restore fails with an error that names
// the problem, and leaves nothing behind; the image then still restores.
func TestRestoreFailures(t *testing.T) {
	c, images := checkpointed(t)
	fakeRunc := filepath.Join(t.TempDir(), "runc")
	os.WriteFile(fakeRunc, []byte("#!/bin/sh\necho 'runc version 1.1.99'\necho 'spec: 1.0.2'\n"), 0o755)

	tests := []struct {
		name    string
		prepare func(t *testing.T, dir string) // on a copy of the images
		opts    func(o *container.RestoreOptions)
		want    []string
	}{
		{
			name: "missing image dir",
			opts: func(o *container.RestoreOptions) { o.ImagePath = filepath.Join(t.TempDir(), "nope") },
			want: []string{"image dir", "no such file"},
		},
		{
			name: "wrong runc version",
			opts: func(o *container.RestoreOptions) { o.Runc = fakeRunc },
			want: []string{"runc 1.1.99", "runc " + runcstate.PinnedVersion()},
		},
		{
			name:    "no ckpt.json",
			prepare: func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, image.MetadataFile)) },
			want:    []string{"incomplete"},
		},
		{
			name: "descriptors.json is a FIFO",
			prepare: func(t *testing.T, dir string) {
				p := filepath.Join(dir, image.DescriptorsFile)
				os.Remove(p)
				if err := unix.Mkfifo(p, 0o600); err != nil {
					t.Fatal(err)
				}
			},
			want: []string{"descriptors.json", "not a regular file"},
		},
		{
			name: "descriptors.json is a symlink",
			prepare: func(t *testing.T, dir string) {
				p := filepath.Join(dir, image.DescriptorsFile)
				os.Remove(p)
				os.Symlink("/dev/zero", p)
			},
			want: []string{"descriptors.json", "symlink"},
		},
		{
			name: "descriptors.json with two entries",
			prepare: func(t *testing.T, dir string) {
				os.WriteFile(filepath.Join(dir, image.DescriptorsFile), []byte(`["/dev/null","/dev/null"]`), 0o600)
			},
			want: []string{"exactly 3"},
		},
		{
			name: "corrupt image: CRIU fails",
			prepare: func(t *testing.T, dir string) {
				os.WriteFile(filepath.Join(dir, "core-1.img"), []byte("not an image at all, not at all"), 0o600)
			},
			want: []string{"criu RESTORE failed", "criu says"},
		},
		{
			name: "a recreated tmpfs with a mount flag ckpt does not know",
			prepare: func(t *testing.T, dir string) {
				editFreshTmpfs(t, dir, func(ft *image.FreshTmpfs) { ft.Flags += ",bogus" })
			},
			want: []string{"unknown mount flag", "bogus"},
		},
		{
			name: "a recreated tmpfs the kernel refuses to mount",
			prepare: func(t *testing.T, dir string) {
				editFreshTmpfs(t, dir, func(ft *image.FreshTmpfs) { ft.Data = "size=lots" })
			},
			want: []string{"mount a new tmpfs", "size=lots"},
		},
		{
			name: "a recreated tmpfs entry that leads out of it",
			prepare: func(t *testing.T, dir string) {
				editFreshTmpfs(t, dir, func(ft *image.FreshTmpfs) {
					ft.Entries = append(ft.Entries, image.TmpfsEntry{Path: "../../escaped", Type: "file", Mode: 0o644})
				})
			},
			want: []string{"entry \"../../escaped\"", "is not one ckpt recorded"},
		},
		{
			name: "a pages image cut short",
			prepare: func(t *testing.T, dir string) {
				pages, _ := filepath.Glob(filepath.Join(dir, "pages-*.img"))
				if len(pages) == 0 {
					t.Fatal("no pages image")
				}
				os.Truncate(pages[0], 5000)
			},
			want: []string{"is 5000 bytes, but pagemap-", "truncated"},
		},
		{
			name: "ckpt.json that is not JSON",
			prepare: func(t *testing.T, dir string) {
				os.WriteFile(filepath.Join(dir, image.MetadataFile), []byte("{nope"), 0o600)
			},
			want: []string{"image ", image.MetadataFile},
		},
		{
			name: "terminal image without a console",
			prepare: func(t *testing.T, dir string) {
				md, err := image.ReadMetadataPath(dir)
				if err != nil {
					t.Fatal(err)
				}
				md.Terminal = true
				image.WriteMetadata(dir, md)
			},
			want: []string{"terminal", "console"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyDir(t, images)
			if tc.prepare != nil {
				tc.prepare(t, dir)
			}
			id := c.id + "-fail"
			opts := c.restoreOpts(dir, id)
			if tc.opts != nil {
				tc.opts(&opts)
			}
			done := make(chan error, 1)
			go func() {
				_, err := container.Restore(ctx(t), opts)
				done <- err
			}()
			var err error
			select {
			case err = <-done:
			case <-time.After(90 * time.Second):
				t.Fatal("restore hangs")
			}
			if err == nil {
				c.destroy(id)
				t.Fatal("restore succeeded")
			}
			t.Logf("error: %v", err)
			if tc.name == "ckpt.json that is not JSON" && !strings.Contains(err.Error(), dir) {
				t.Errorf("error %q does not name the image dir %s", err, dir)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			c.assertGone(id, nil)
		})
	}

	// The intact image still restores after all that.
	before := c.last()
	c.restore(images, c.id)
	c.waitCount(before + 3)
}

// TestRestoreExistingID refuses to restore over a container runc has, and
// leaves that one alone.
func TestRestoreExistingID(t *testing.T) {
	c := newCtr(t, nil)
	c.start()
	images := c.checkpoint(container.CheckpointOptions{LeaveRunning: true})
	_, err := container.Restore(ctx(t), c.restoreOpts(images, c.id))
	if err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("restore over a running container: %v", err)
	}
	if st, _ := c.state(c.id); st != "running" {
		t.Fatalf("existing container is %q", st)
	}
	c.waitCount(c.last() + 3)
}

// TestFailedCheckpointLeavesContainerRunning fails a dump at post-dump:
// CRIU rolls back, the container keeps counting, and the image dir holds
// no restorable checkpoint.
func TestFailedCheckpointLeavesContainerRunning(t *testing.T) {
	c := newCtr(t, nil)
	c.start()
	dir := filepath.Join(t.TempDir(), "images")
	boom := errors.New("refused by the test")
	_, err := container.Checkpoint(ctx(t), container.CheckpointOptions{
		Root: c.root, ID: c.id, ImagePath: dir,
		OnStage: func(_ context.Context, s criu.Stage, _ int) error {
			if s == criu.PostDump {
				return boom
			}
			return nil
		},
	})
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "post-dump") || !strings.Contains(err.Error(), "still running") {
		t.Fatalf("checkpoint error: %v", err)
	}
	if st, _ := c.state(c.id); st != "running" {
		t.Fatalf("container %q after a failed checkpoint", st)
	}
	c.waitCount(c.last() + 3)
	if _, err := image.ReadMetadataPath(dir); !errors.Is(err, image.ErrNoMetadata) {
		t.Errorf("failed checkpoint left metadata: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".img") || e.Name() == image.DescriptorsFile {
			t.Errorf("failed checkpoint left %s", e.Name())
		}
	}
}

// TestPreDump: without soft-dirty tracking (this CI kernel) pre-dump fails
// clearly and the container runs on; with it, a pre-dump is the parent of
// a checkpoint that restores.
func TestPreDump(t *testing.T) {
	c := newCtr(t, nil)
	c.start()
	caps, err := criu.Probe(ctx(t), "")
	if err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	_, err = container.Checkpoint(ctx(t), container.CheckpointOptions{
		Root: c.root, ID: c.id, ImagePath: filepath.Join(base, "pre"), PreDump: true,
	})
	if !caps.PreDump() {
		if err == nil || !strings.Contains(err.Error(), "pre-dump is not possible") || !strings.Contains(err.Error(), "soft-dirty") {
			t.Fatalf("pre-dump without memory tracking: %v", err)
		}
		if st, _ := c.state(c.id); st != "running" {
			t.Fatalf("container %q after a refused pre-dump", st)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	images := c.checkpoint(container.CheckpointOptions{ImagePath: filepath.Join(base, "final"), ParentPath: "../pre"})
	before := c.last()
	c.restore(images, c.id)
	c.waitCount(before + 3)
}

func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "images")
	os.Mkdir(dst, 0o700)
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// editFreshTmpfs edits the first recreated tmpfs ckpt.json records.
func editFreshTmpfs(t *testing.T, dir string, edit func(*image.FreshTmpfs)) {
	t.Helper()
	md, err := image.ReadMetadataPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(md.FreshTmpfs) == 0 {
		t.Fatal("the checkpoint left no tmpfs out")
	}
	edit(&md.FreshTmpfs[0])
	if err := image.WriteMetadata(dir, md); err != nil {
		t.Fatal(err)
	}
}

// TestCheckpointCreatedContainer: a container runc created but did not
// start is refused before CRIU runs, saying so (failed precondition).
func TestCheckpointCreatedContainer(t *testing.T) {
	c := newCtr(t, nil)
	f := c.openOut()
	cmd := command(t, "runc", "--root", c.root, "create", "--bundle", c.bundle, c.id)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Run(); err != nil {
		t.Fatalf("runc create: %v", err)
	}
	dir := filepath.Join(t.TempDir(), "images")
	_, err := container.Checkpoint(ctx(t), container.CheckpointOptions{Root: c.root, ID: c.id, ImagePath: dir})
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "has not started") {
		t.Fatalf("checkpoint of a created container: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "dump.log")); err == nil {
		t.Error("CRIU ran")
	}
	if st, _ := c.state(c.id); st != "created" {
		t.Errorf("container is %q after the refusal", st)
	}
}

// TestCheckpointDiskFull: a checkpoint into a filesystem that fills up
// says so (not the RLIMIT_NOFILE line every CRIU log has), and the
// container runs on.
func TestCheckpointDiskFull(t *testing.T) {
	c := newCtr(t, nil)
	c.start()
	mnt := t.TempDir()
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=8k"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	_, err := container.Checkpoint(ctx(t), container.CheckpointOptions{Root: c.root, ID: c.id, ImagePath: filepath.Join(mnt, "images"), LeaveRunning: true})
	if err == nil {
		t.Fatal("checkpoint into 8 KiB succeeded")
	}
	t.Logf("error: %v", err)
	if !errors.Is(err, unix.ENOSPC) || !strings.Contains(err.Error(), "no space left on device") || strings.Contains(err.Error(), "RLIMIT") {
		t.Errorf("error does not say the disk is full: %v", err)
	}
	if st, _ := c.state(c.id); st != "running" {
		t.Fatalf("container %q after a failed checkpoint", st)
	}
	c.waitCount(c.last() + 3)
}
