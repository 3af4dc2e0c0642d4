package criu

import (
	"os/exec"
	"testing"
	"time"
)

// criu's tree is found through /proc's children lists and killed, checked
// by start time; a task whose pid was taken since is left alone.
func TestTreeKill(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	cmd := exec.Command(sh, "-c", "sleep 100 & sleep 100 & wait")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var tree []task
	deadline := time.Now().Add(5 * time.Second)
	for len(tree) < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		tree = descendants(cmd.Process.Pid)
	}
	if len(tree) != 2 {
		t.Fatalf("descendants = %v, want the two sleeps", tree)
	}
	stale := task{pid: tree[0].pid, start: tree[0].start + 1}
	if hit := killTasks([]task{stale}); len(hit) != 0 {
		t.Fatalf("killed %v, a task whose start time differs", hit)
	}
	if hit := killTasks(tree); len(hit) != 2 {
		t.Fatalf("killed %v, want both", hit)
	}
	// sh's wait returns once both are dead.
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the tree survived")
	}
	// Our own child stands in for a restored root (rst_sibling).
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep")
	}
	own := exec.Command(sleep, "100")
	if err := own.Start(); err != nil {
		t.Fatal(err)
	}
	defer own.Process.Kill()
	since, _ := startTime(own.Process.Pid)
	got := siblingsRunning(sleep, since)
	if len(got) != 1 || got[0].pid != own.Process.Pid {
		t.Fatalf("siblingsRunning = %v, want %d", got, own.Process.Pid)
	}
	if other := siblingsRunning(sh, since); len(other) != 0 {
		t.Fatalf("siblingsRunning(sh) = %v: another binary", other)
	}
	reapOwn(killTasks(got))
	if _, ok := startTime(own.Process.Pid); ok {
		t.Error("the killed child was not reaped")
	}
}
