package runc_test

import (
	"strings"
	"testing"

	"github.com/ckpt-dev/ckpt/runtime/container"
)

// TestCounterTwoCycles checkpoints and restores a counter twice under the
// same id; it keeps counting from where it was, and runc manages the
// restored container (state, exec, kill, delete).
func TestCounterTwoCycles(t *testing.T) {
	c := newCtr(t, nil)
	c.start()
	for cycle := 1; cycle <= 2; cycle++ {
		cg := c.cgroupPaths(c.id)
		images := c.checkpoint(container.CheckpointOptions{})
		if st, _ := c.state(c.id); st != "" {
			t.Fatalf("cycle %d: runc still knows the checkpointed container (%s)", cycle, st)
		}
		c.assertGone(c.id, cg)
		before := c.last()
		pid := c.restore(images, c.id)
		st, rpid := c.state(c.id)
		if st != "running" || rpid != pid {
			t.Fatalf("cycle %d: runc state = %s pid %d, want running pid %d", cycle, st, rpid, pid)
		}
		c.waitCount(before + 5)
	}
	c.assertContinuous()
	out, err := c.exec("sh", "-c", "echo exec-ok")
	if err != nil || !strings.Contains(out, "exec-ok") {
		t.Fatalf("runc exec into the restored container: %v: %s", err, out)
	}
	cg := c.cgroupPaths(c.id)
	c.destroy(c.id)
	c.assertGone(c.id, cg)
}

// TestCheckpointPaused checkpoints a paused container (containerd pauses
// before it checkpoints); the restored container runs.
func TestCheckpointPaused(t *testing.T) {
	c := newCtr(t, nil)
	c.start()
	run(t, "runc", "--root", c.root, "pause", c.id)
	if st, _ := c.state(c.id); st != "paused" {
		t.Fatalf("runc pause: %s", st)
	}
	images := c.checkpoint(container.CheckpointOptions{})
	before := c.last()
	c.restore(images, c.id)
	if st, _ := c.state(c.id); st != "running" {
		t.Fatalf("restored container is %s", st)
	}
	c.waitCount(before + 3)
	c.assertContinuous()
}
