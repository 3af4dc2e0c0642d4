package runc_test

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ckpt-dev/ckpt/integration/internal/testutil"
	"github.com/ckpt-dev/ckpt/runtime/image"
)

// buildCLI builds cmd/ckpt for the test.
func buildCLI(t *testing.T) string {
	t.Helper()
	testutil.Require(t, "go")
	bin := filepath.Join(t.TempDir(), "ckpt")
	out, err := exec.Command("go", "build", "-o", bin, "../../cmd/ckpt").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestCLI drives checkpoint, inspect and restore through the ckpt binary.
func TestCLI(t *testing.T) {
	c := newCtr(t, nil)
	bin := buildCLI(t)
	c.start()
	images := filepath.Join(t.TempDir(), "images")

	out, err := command(t, bin, "--criu", "/nonexistent/criu", "checkpoint", "--root", c.root, "--image-path", images, c.id).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "/nonexistent/criu") {
		t.Fatalf("--criu not used: %v: %s", err, out)
	}
	if st, _ := c.state(c.id); st != "running" {
		t.Fatalf("container %q after a failed checkpoint", st)
	}

	out, err = command(t, bin, "checkpoint", "--root", c.root, "--image-path", images, "--file-locks", c.id).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "checkpoint of "+c.id) {
		t.Fatalf("ckpt checkpoint: %v: %s", err, out)
	}
	out, err = command(t, bin, "inspect", "--json", images).Output()
	if err != nil {
		t.Fatalf("ckpt inspect: %v: %s", err, out)
	}
	var info image.Info
	if err := json.Unmarshal(out, &info); err != nil {
		t.Fatal(err)
	}
	if !info.Complete || info.Metadata.ContainerID != c.id || !info.Metadata.Options.FileLocks || info.TotalSize == 0 {
		t.Errorf("inspect: %+v", info)
	}
	if info.Metadata.Stats == nil || info.Metadata.Stats.PagesWritten == 0 {
		t.Errorf("no dump statistics: %+v", info.Metadata)
	}
	if out, err := command(t, bin, "inspect", images).CombinedOutput(); err != nil || !strings.Contains(string(out), "complete") ||
		!strings.Contains(string(out), "recreated tmpfs") || !strings.Contains(string(out), "/dev/shm") || !strings.Contains(string(out), "inodes, no data") {
		t.Errorf("inspect (text): %v: %s", err, out)
	}

	before := c.last()
	id := c.id + "-cli"
	out, err = command(t, bin, "restore", "--root", c.root, "--bundle", c.bundle, "--image-path", images,
		"--detach", "--stdout", c.out, "--stderr", c.out, id).CombinedOutput()
	if err != nil {
		t.Fatalf("ckpt restore: %v: %s", err, out)
	}
	c.id = id
	if st, _ := c.state(id); st != "running" {
		t.Fatalf("restored container is %q", st)
	}
	c.waitCount(before + 3)
	c.assertContinuous()

	empty := t.TempDir()
	if out, err := command(t, bin, "inspect", empty).CombinedOutput(); err == nil || !strings.Contains(string(out), "INCOMPLETE") {
		t.Errorf("inspect of an empty dir: %v: %s", err, out)
	}
}
