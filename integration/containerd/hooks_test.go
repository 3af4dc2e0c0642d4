package containerd_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// hookScript appends "<phase> <State JSON>" to the log next to it. It
// lives in a dir bind-mounted at the same path in the container, so it
// resolves, and the log is shared, wherever the hook runs.
const hookScript = `#!/bin/sh
state=$(cat)
echo "$1 $state" >>"$(dirname "$0")/hooks.log"
`

type hookRecord struct {
	Phase string
	State specs.State
}

// TestRestoreRunsHooksInOrder: a container with every OCI hook kind is
// checkpointed and restored through the shim. On restore, ckpt runs the
// hooks at the CRIU stages of its hook map: prestart and createRuntime
// (in Create, before the hold), createContainer, startContainer and
// poststart, once each, in that order, with the restored container's
// status and pid; poststop runs once when the task is deleted.
func TestRestoreRunsHooksInOrder(t *testing.T) {
	d := daemon(t)
	ctx := testContext(t, d)
	dir, err := os.MkdirTemp("", "ckpt-hooks")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	script := filepath.Join(dir, "hook.sh")
	if err := os.WriteFile(script, []byte(hookScript), 0o755); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "hooks.log")
	hook := func(phase string) []specs.Hook {
		return []specs.Hook{{Path: script, Args: []string{"hook.sh", phase}, Env: []string{"PATH=/bin:/usr/bin"}}}
	}
	withHooks := func(_ context.Context, _ oci.Client, _ *containers.Container, s *specs.Spec) error {
		s.Hooks = &specs.Hooks{
			//lint:ignore SA1019 deprecated in the spec, still what Docker 26 and CNI users set
			Prestart:        hook("prestart"),
			CreateRuntime:   hook("createRuntime"),
			CreateContainer: hook("createContainer"),
			StartContainer:  hook("startContainer"),
			Poststart:       hook("poststart"),
			Poststop:        hook("poststop"),
		}
		return nil
	}
	c := newContainer(t, d, ctx, counter, withHooks,
		oci.WithMounts([]specs.Mount{{Type: "bind", Source: dir, Destination: dir, Options: []string{"rbind", "rw"}}}))
	task, statusC, before := startCounter(t, d, ctx, c)
	// runc runs poststart from `runc start` while the init runs
	// startContainer: their order varies.
	if got := sortedPhases(readHookLog(t, logPath)); got != "createContainer createRuntime poststart prestart startContainer" {
		t.Fatalf("hooks of the fresh container (run by runc): %s", got)
	}

	checkpoint, err := c.Checkpoint(ctx, "ckpt-test/"+c.ID()+":1",
		client.WithCheckpointRuntime, client.WithCheckpointRW, client.WithCheckpointTaskExit, client.WithCheckpointTask)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Client.ImageService().Delete(context.WithoutCancel(ctx), checkpoint.Name()) })
	waitStatus(t, statusC, 10*time.Second)
	if _, err := task.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	// The checkpoint stopped the container: runc's delete ran poststop.
	if got := phases(readHookLog(t, logPath)); !strings.HasSuffix(got, " poststop") || strings.Count(got, "poststop") != 1 {
		t.Fatalf("after a checkpoint that stops the container, hooks were: %s", got)
	}
	if err := os.Remove(logPath); err != nil {
		t.Fatal(err)
	}

	out := &syncBuffer{}
	rtask, err := c.NewTask(ctx, streams(d, nil, out, nil, false), client.WithTaskCheckpoint(checkpoint))
	if err != nil {
		t.Fatal(err)
	}
	pid := int(rtask.Pid())
	// Create returns at setup-namespaces and CRIU is held at
	// post-setup-namespaces: only the hooks of setup-namespaces have run.
	if got := phases(readHookLog(t, logPath)); got != "prestart createRuntime" {
		t.Fatalf("hooks run by Create of a restored task: %q, want prestart createRuntime", got)
	}
	rstatusC, err := rtask.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := rtask.Start(ctx); err != nil {
		t.Fatal(err)
	}
	expectContinues(t, before, out)

	want := []struct {
		phase, status string
		pid           int
	}{
		{"prestart", "creating", pid},
		{"createRuntime", "creating", pid},
		{"createContainer", "creating", 1}, // in the container: its own pid
		{"startContainer", "created", 1},
		{"poststart", "running", pid},
	}
	got := readHookLog(t, logPath)
	if len(got) != len(want) {
		t.Fatalf("restore ran hooks %s, want %d", phases(got), len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.Phase != w.phase || string(g.State.Status) != w.status || g.State.Pid != w.pid || g.State.ID != c.ID() {
			t.Errorf("hook %d: %s status %s pid %d id %s; want %s status %s pid %d id %s",
				i, g.Phase, g.State.Status, g.State.Pid, g.State.ID, w.phase, w.status, w.pid, c.ID())
		}
		if g.State.Bundle == "" || g.State.Version == "" {
			t.Errorf("hook %s: State without bundle or ociVersion: %+v", g.Phase, g.State)
		}
	}

	if err := rtask.Kill(ctx, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, rstatusC, 10*time.Second)
	if _, err := rtask.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	got = readHookLog(t, logPath)
	if p := phases(got); p != "prestart createRuntime createContainer startContainer poststart poststop" {
		t.Fatalf("after deleting the restored task, hooks were: %s (poststop must run once)", p)
	}
	if st := got[len(got)-1].State.Status; st != specs.StateStopped {
		t.Errorf("poststop got status %s, want stopped", st)
	}
}

func readHookLog(t *testing.T, path string) []hookRecord {
	t.Helper()
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var recs []hookRecord
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		phase, state, ok := strings.Cut(l, " ")
		if !ok {
			t.Fatalf("hook log line %q", l)
		}
		r := hookRecord{Phase: phase}
		if err := json.Unmarshal([]byte(state), &r.State); err != nil {
			t.Fatalf("hook %s got State %q: %v", phase, state, err)
		}
		recs = append(recs, r)
	}
	return recs
}

func sortedPhases(recs []hookRecord) string {
	p := strings.Fields(phases(recs))
	slices.Sort(p)
	return strings.Join(p, " ")
}

func phases(recs []hookRecord) string {
	var p []string
	for _, r := range recs {
		p = append(p, r.Phase)
	}
	return strings.Join(p, " ")
}
