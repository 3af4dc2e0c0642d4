package docker_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ckpt-dev/ckpt/runtime/image"
)

// docker runs this engine's CLI; the output is stdout and stderr.
func (e *engine) docker(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(e.bin, "docker"), args...)
	cmd.Env = e.cliEnv()
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func (e *engine) cliEnv() []string {
	return append(envWithout(os.Environ(), "DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_CONFIG"),
		"DOCKER_HOST=unix://"+e.dockerSock(), "DOCKER_CONFIG="+filepath.Join(e.dir, "cli"))
}

// must runs the CLI and fails the test on an error.
func (e *engine) must(t *testing.T, args ...string) string {
	t.Helper()
	out, err := e.docker(args...)
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// inspect is one field of docker inspect (a Go template).
func (e *engine) inspect(t *testing.T, name, format string) string {
	t.Helper()
	return e.must(t, "inspect", "--format", format, name)
}

func (e *engine) running(t *testing.T, name string) bool {
	t.Helper()
	return e.inspect(t, name, "{{.State.Running}}") == "true"
}

// gone asserts that docker no longer knows the container.
func (e *engine) gone(t *testing.T, name string) {
	t.Helper()
	if out, err := e.docker("inspect", name); err == nil || !strings.Contains(strings.ToLower(out), "no such") {
		t.Fatalf("container %s still exists after docker rm: %v\n%s", name, err, out)
	}
}

// checkpointDir is where Docker keeps a container's checkpoint.
func (e *engine) checkpointDir(t *testing.T, name, checkpoint string) string {
	t.Helper()
	id := e.inspect(t, name, "{{.Id}}")
	return filepath.Join(e.dataRoot(), "containers", id, "checkpoints", checkpoint)
}

// checkpointMetadata reads ckpt's ckpt.json from Docker's copy of a
// checkpoint.
func (e *engine) checkpointMetadata(t *testing.T, name, checkpoint string) image.Metadata {
	t.Helper()
	var md image.Metadata
	data, err := os.ReadFile(filepath.Join(e.checkpointDir(t, name, checkpoint), image.MetadataFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &md); err != nil {
		t.Fatal(err)
	}
	return md
}

// checkpoints is `docker checkpoint ls`.
func (e *engine) checkpoints(t *testing.T, name string) []string {
	t.Helper()
	lines := strings.Split(e.must(t, "checkpoint", "ls", name), "\n")
	var out []string
	for _, l := range lines[1:] { // a header first
		if f := strings.Fields(l); len(f) > 0 {
			out = append(out, f[0])
		}
	}
	return out
}

// counterScript prints 0, 1, 2, ... to stdout and into /tmp/count (read
// with readCount). The file is written in place, not renamed: a checkpoint
// that catches the shell with a temp file open, taken with the container
// left running, could not be restored once that file was gone. (No
// listening socket: CRIU 4.1.1 cannot dump TCP sockets on kernel 6.18,
// "Can't get 1:16 opt", with any runtime.)
const counterScript = `i=0; while :; do echo $i; echo $i > /tmp/count; i=$((i+1)); sleep 0.1; done`

// counter is the container's output so far, as numbers.
func (e *engine) counter(t *testing.T, name string) []int {
	t.Helper()
	out := e.must(t, "logs", name)
	var vals []int
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimSpace(l); l == "" {
			continue
		}
		v, err := strconv.Atoi(l)
		if err != nil {
			t.Fatalf("docker logs %s: %q is not a counter value", name, l)
		}
		vals = append(vals, v)
	}
	return vals
}

// waitCounter waits until the counter has passed min and returns the
// values.
func (e *engine) waitCounter(t *testing.T, name string, min int) []int {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		vals := e.counter(t, name)
		if len(vals) > 0 && vals[len(vals)-1] > min {
			return vals
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the counter did not pass %d in 20s (running %v): %v", name, min, e.running(t, name), tailInts(vals, 10))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitLines waits until the container has printed n values.
func (e *engine) waitLines(t *testing.T, name string, n int) []int {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		vals := e.counter(t, name)
		if len(vals) >= n {
			return vals
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d values after 20s, want %d (running %v): %v", name, len(vals), n, e.running(t, name), tailInts(vals, 10))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// assertContinuous asserts the whole output is 0, 1, 2, ... without a gap
// or a restart: every restore continued where its checkpoint stopped.
func assertContinuous(t *testing.T, name string, vals []int) {
	t.Helper()
	for i, v := range vals {
		if v != i {
			t.Fatalf("%s: the counter is not continuous at line %d: got %d, want %d (around: %v)", name, i, v, i, vals[max(0, i-3):min(len(vals), i+3)])
		}
	}
}

func tailInts(v []int, n int) []int {
	if len(v) > n {
		return v[len(v)-n:]
	}
	return v
}

// last is the last value the counter printed.
func last(t *testing.T, vals []int) int {
	t.Helper()
	if len(vals) == 0 {
		t.Fatal("the counter printed nothing")
	}
	return vals[len(vals)-1]
}

// ping pings ip from the engine's network namespace (the bridge is only
// there) with busybox.
func (e *engine) ping(t *testing.T, ip string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "nsenter", "--net=/run/netns/"+e.netns, "--",
		"/bin/busybox", "ping", "-c", "1", "-W", "5", ip).CombinedOutput()
	if err != nil {
		t.Fatalf("ping %s from the bridge's namespace: %v\n%s", ip, err, out)
	}
}
