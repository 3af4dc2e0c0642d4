package nerdctl_test

import (
	"context"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/ckpt-dev/ckpt/integration/containerd/harness"
)

var ttyCount = regexp.MustCompile(`tty-(\d+)`)

// lastTTYCount is the highest tty-N in the container's log (0: none).
func lastTTYCount(ctx context.Context, t *testing.T, e *env, name string) int {
	t.Helper()
	out, err := e.nerdctl(ctx, "logs", name)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, m := range ttyCount.FindAllStringSubmatch(out, -1) {
		if v, _ := strconv.Atoi(m[1]); v > n {
			n = v
		}
	}
	return n
}

// waitTTYCount waits until the log shows a count above min.
func waitTTYCount(ctx context.Context, t *testing.T, e *env, name string, min int) int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if n := lastTTYCount(ctx, t, e, name); n > min {
			return n
		}
		if time.Now().After(deadline) {
			out, _ := e.nerdctl(ctx, "logs", name)
			t.Fatalf("%s (%s) shows no count above %d in 30s; its log:\n%s", name, status(ctx, e, name), min, tail(out, 10))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestNerdctlTerminal: `nerdctl run -d -t` on ckpt's shim (a terminal
// whose output goes to nerdctl's logging binary): the log shows what the
// process writes on its terminal, and after a checkpoint and `start
// --checkpoint` the same process goes on writing there.
func TestNerdctlTerminal(t *testing.T) {
	e := start(t)
	ctx := testContext(t)
	name := "ctty"
	t.Cleanup(func() { e.nerdctl(context.Background(), "rm", "-f", name) })
	if _, err := e.nerdctl(ctx, "run", "-d", "-t", "--name", name, "--runtime", ckptRuntime, "--net", "none",
		harness.ImageName, "sh", "-c", "i=0; while :; do i=$((i+1)); echo tty-$i; [ -t 1 ] || echo not-a-tty; sleep 0.1; done"); err != nil {
		t.Fatal(err)
	}
	before := waitTTYCount(ctx, t, e, name, 5)
	if out, _ := e.nerdctl(ctx, "logs", name); regexp.MustCompile(`not-a-tty`).MatchString(out) {
		t.Fatal("the process's stdout is not a terminal")
	}
	if _, err := e.nerdctl(ctx, "checkpoint", "create", name, "cp-tty"); err != nil {
		t.Fatal(err)
	}
	last := lastTTYCount(ctx, t, e, name)
	if last < before {
		t.Fatalf("count went back from %d to %d", before, last)
	}
	if _, err := e.nerdctl(ctx, "start", "--checkpoint", "cp-tty", name); err != nil {
		t.Fatal(err)
	}
	waitTTYCount(ctx, t, e, name, last+3)
	if _, err := e.nerdctl(ctx, "rm", "-f", name); err != nil {
		t.Fatal(err)
	}
}
