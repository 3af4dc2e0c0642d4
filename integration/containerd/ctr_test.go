package containerd_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ckpt-dev/ckpt/integration/containerd/harness"
)

// TestCtrCheckpointRestore is the README's ctr session, with the ctr of
// the containerd under test: run on ckpt's runtime, `ctr container
// checkpoint --task` (the task runs on), kill and delete it, `ctr
// container restore --live`: the counter goes on from the checkpoint.
func TestCtrCheckpointRestore(t *testing.T) {
	d := daemon(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out := filepath.Join(t.TempDir(), "count")
	if err := os.WriteFile(out, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	id := fmt.Sprintf("ctr-counter-%d", os.Getpid())
	ref := d.Namespace + "/" + id + ":1"
	ctr := func(args ...string) (string, error) {
		argv := append([]string{"--address", d.Address, "--namespace", d.Namespace}, args...)
		b, err := exec.CommandContext(ctx, harness.CtrBin(), argv...).CombinedOutput()
		if err != nil {
			return string(b), fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, b)
		}
		return string(b), nil
	}
	t.Cleanup(func() {
		ctr("task", "kill", "-s", "KILL", id)
		time.Sleep(200 * time.Millisecond)
		ctr("task", "delete", "-f", id)
		ctr("container", "delete", id)
		ctr("image", "rm", ref)
	})
	if _, err := ctr("run", "-d", "--runtime", harness.Runtime,
		"--mount", "type=bind,src="+out+",dst=/out,options=rbind:rw",
		harness.ImageName, id, "sh", "-c", "i=0; while :; do i=$((i+1)); echo $i >>/out; sleep 0.1; done"); err != nil {
		t.Fatal(err)
	}
	before, err := waitCount(out, 5)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ctr("container", "checkpoint", "--task", id, ref); err != nil {
		t.Fatal(err)
	}
	atCheckpoint, err := waitCount(out, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := waitCount(out, atCheckpoint+5); err != nil {
		t.Fatalf("the task does not run on after ctr container checkpoint: %v", err)
	}
	for _, args := range [][]string{{"task", "kill", "-s", "KILL", id}} {
		if _, err := ctr(args...); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		ls, _ := ctr("task", "ls")
		if strings.Contains(ls, "STOPPED") || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, args := range [][]string{{"task", "delete", id}, {"container", "delete", id}} {
		if _, err := ctr(args...); err != nil {
			t.Fatal(err)
		}
	}
	killed, _ := lastCount(out)
	if _, err := ctr("container", "restore", "--live", id, ref); err != nil {
		t.Fatal(err)
	}
	// The restored shell appends after what the killed one wrote; its
	// first count continues from the checkpoint, not from 1.
	var restored []int
	deadline = time.Now().Add(30 * time.Second)
	for len(restored) < 5 {
		counts, _ := counts(out)
		if len(counts) > killedLines(counts, killed) {
			restored = counts[killedLines(counts, killed):]
		}
		if time.Now().After(deadline) {
			t.Fatalf("the restored counter: %v after %d", restored, killed)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if restored[0] <= before || restored[0] > killed {
		t.Errorf("the restored counter starts at %d; checkpointed between %d and %d", restored[0], before, killed)
	}
	t.Logf("%s: checkpointed between %d and %d, killed at %d, restored: %v", harness.CtrBin(), before, atCheckpoint, killed, restored)
}

// counts are the lines of the counter's file.
func counts(path string) ([]int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []int
	for _, f := range strings.Fields(string(data)) {
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

// killedLines is how many lines the killed task wrote: up to its last
// count, killed.
func killedLines(c []int, killed int) int {
	for i, n := range c {
		if n == killed {
			return i + 1
		}
	}
	return len(c)
}

func lastCount(path string) (int, error) {
	c, err := counts(path)
	if err != nil || len(c) == 0 {
		return 0, fmt.Errorf("no count in %s: %v", path, err)
	}
	return c[len(c)-1], nil
}

// waitCount waits until the counter reached min and returns its count.
func waitCount(path string, min int) (int, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		n, err := lastCount(path)
		if err == nil && n >= min {
			return n, nil
		}
		if time.Now().After(deadline) {
			return n, fmt.Errorf("the counter in %s is at %d, want %d: %v", path, n, min, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
