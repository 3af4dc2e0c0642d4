package runc_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ckpt-dev/ckpt/hooks"
	"github.com/ckpt-dev/ckpt/runtime/container"
	"github.com/ckpt-dev/ckpt/runtime/criu"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// hookDir is a host dir with a recording hook, bound into the container
// at /hooks: hooks on either side of the mount namespace log to the same
// file.
type hookDir struct {
	t   *testing.T
	dir string
}

// inContainer is where a hookDir is mounted in the container.
const inContainer = "/hooks"

// recordScript logs the phase ($1), the State from stdin, the hook's pid
// and mount namespaces and the time, tab-separated, to $2. It runs with
// the host's sh or, inside the container, busybox's.
const recordScript = `#!/bin/sh
state=$(cat)
printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$state" "$(readlink /proc/self/ns/pid)" "$(readlink /proc/self/ns/mnt)" "$(date +%s)" >> "$2"
`

func newHookDir(t *testing.T) *hookDir {
	h := &hookDir{t: t, dir: t.TempDir()}
	h.write("record.sh", recordScript)
	h.write("fail.sh", recordScript+"echo \"$1 says no\" >&2\nexit 3\n")
	return h
}

func (h *hookDir) write(name, content string) {
	if err := os.WriteFile(filepath.Join(h.dir, name), []byte(content), 0o755); err != nil {
		h.t.Fatal(err)
	}
}

func (h *hookDir) mount() specs.Mount {
	return specs.Mount{Source: h.dir, Destination: inContainer, Type: "bind", Options: []string{"rbind", "rw"}}
}

// hook returns a hook of phase running script: found on the host except
// for startContainer (the spec resolves its path in the container), and
// logging through the host path or, inside the container, the mount.
func (h *hookDir) hook(phase hooks.Phase, script string) specs.Hook {
	path, log := filepath.Join(h.dir, script), filepath.Join(h.dir, "log")
	if phase.PathInContainer() {
		path = inContainer + "/" + script
	}
	if phase == hooks.CreateContainer || phase == hooks.StartContainer {
		log = inContainer + "/log"
	}
	return specs.Hook{Path: path, Args: []string{script, string(phase), log}, Timeout: intPtr(30)}
}

// all returns every phase's recording hook, with fail.sh for failing.
func (h *hookDir) all(failing hooks.Phase) *specs.Hooks {
	one := func(p hooks.Phase) []specs.Hook {
		if p == failing {
			return []specs.Hook{h.hook(p, "fail.sh")}
		}
		return []specs.Hook{h.hook(p, "record.sh")}
	}
	return &specs.Hooks{
		//lint:ignore SA1019 prestart is deprecated, and still run
		Prestart: one(hooks.Prestart), CreateRuntime: one(hooks.CreateRuntime), CreateContainer: one(hooks.CreateContainer),
		StartContainer: one(hooks.StartContainer), Poststart: one(hooks.Poststart), Poststop: one(hooks.Poststop),
	}
}

type hookCall struct {
	phase      string
	state      specs.State
	pidNS, mnt string
	at         int64
}

func (h *hookDir) calls() []hookCall {
	var out []hookCall
	for _, l := range strings.Split(strings.TrimSpace(readFile(filepath.Join(h.dir, "log"))), "\n") {
		if l == "" {
			continue
		}
		f := strings.Split(l, "\t")
		if len(f) != 5 {
			h.t.Fatalf("hook log line %q", l)
		}
		c := hookCall{phase: f[0], pidNS: f[2], mnt: f[3]}
		if err := json.Unmarshal([]byte(f[1]), &c.state); err != nil {
			h.t.Fatalf("state of %s: %v: %q", f[0], err, f[1])
		}
		c.at, _ = strconv.ParseInt(f[4], 10, 64)
		out = append(out, c)
	}
	return out
}

func (h *hookDir) reset() { os.Remove(filepath.Join(h.dir, "log")) }

func phasesOf(calls []hookCall) []string {
	var p []string
	for _, c := range calls {
		p = append(p, c.phase)
	}
	return p
}

func nsLink(t *testing.T, pid, ns string) string {
	t.Helper()
	l, err := os.Readlink("/proc/" + pid + "/ns/" + ns)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func intPtr(n int) *int { return &n }

// TestRestoreRunsEveryHook restores a container whose config.json has
// every kind of hook: each runs once, in the runtime-spec's order, with its
// status and the restored pid; createContainer and startContainer run in
// the container's pid and mount namespaces; poststop runs once, on delete
// (and once for the checkpointed container, through runc delete).
func TestRestoreRunsEveryHook(t *testing.T) {
	hd := newHookDir(t)
	c := newCtr(t, func(s *specs.Spec) {
		s.Mounts = append(s.Mounts, hd.mount())
		s.Hooks = &specs.Hooks{Poststop: []specs.Hook{hd.hook(hooks.Poststop, "record.sh")}}
	})
	c.start()
	images := c.checkpoint(container.CheckpointOptions{})
	if got := hd.calls(); len(got) != 1 || got[0].phase != "poststop" || got[0].state.ID != c.id || got[0].state.Status != specs.StateStopped {
		t.Fatalf("checkpoint (runc delete): hooks %+v, want one poststop", got)
	}
	hd.reset()

	c.editSpec(func(s *specs.Spec) { s.Hooks = hd.all("") })
	before := c.last()
	pid := c.restore(images, c.id)
	c.waitCount(before + 3)
	c.assertContinuous()

	got := hd.calls()
	want := []string{"prestart", "createRuntime", "createContainer", "startContainer", "poststart"}
	if !slices.Equal(phasesOf(got), want) {
		t.Fatalf("hooks ran %v, want %v", phasesOf(got), want)
	}
	statuses := map[string]specs.ContainerState{
		"prestart": specs.StateCreating, "createRuntime": specs.StateCreating, "createContainer": specs.StateCreating,
		"startContainer": specs.StateCreated, "poststart": specs.StateRunning,
	}
	self, restored := strconv.Itoa(os.Getpid()), strconv.Itoa(pid)
	for i, h := range got {
		inCtr := h.phase == "createContainer" || h.phase == "startContainer"
		wantPid, wantPidNS, wantMnt := pid, nsLink(t, self, "pid"), nsLink(t, self, "mnt")
		if inCtr {
			// The pid as the container sees it: CRIU restored its init as 1.
			wantPid, wantPidNS, wantMnt = 1, nsLink(t, restored, "pid"), nsLink(t, restored, "mnt")
		}
		if h.state.Status != statuses[h.phase] || h.state.Pid != wantPid || h.state.ID != c.id || h.state.Version != specs.Version {
			t.Errorf("%s got state %+v, want status %s pid %d", h.phase, h.state, statuses[h.phase], wantPid)
		}
		if !strings.HasSuffix(h.state.Bundle, filepath.Base(c.bundle)) || !filepath.IsAbs(h.state.Bundle) {
			t.Errorf("%s: bundle %q", h.phase, h.state.Bundle)
		}
		if h.pidNS != wantPidNS || h.mnt != wantMnt {
			t.Errorf("%s ran in %s %s, want %s %s", h.phase, h.pidNS, h.mnt, wantPidNS, wantMnt)
		}
		if i > 0 && h.at < got[i-1].at {
			t.Errorf("%s logged before %s", h.phase, got[i-1].phase)
		}
	}

	hd.reset()
	c.destroy(c.id)
	if got := hd.calls(); len(got) != 1 || got[0].phase != "poststop" || got[0].state.Status != specs.StateStopped || got[0].state.ID != c.id {
		t.Fatalf("delete: hooks %+v, want one poststop", got)
	}
}

// TestStartContainerHookFailure: CRIU ignores a refused pre-resume, so
// ckpt kills the tree: the restore fails with the hook's error, the
// program never runs again, nothing is left, and poststop runs once.
func TestStartContainerHookFailure(t *testing.T) {
	hd := newHookDir(t)
	c := newCtr(t, func(s *specs.Spec) { s.Mounts = append(s.Mounts, hd.mount()) })
	c.start()
	images := c.checkpoint(container.CheckpointOptions{})
	c.editSpec(func(s *specs.Spec) { s.Hooks = hd.all(hooks.StartContainer) })
	before := c.last()

	restored := 0
	opts := c.restoreOpts(images, c.id)
	opts.OnStage = func(_ context.Context, _ criu.Stage, pid int) error {
		if pid > 0 {
			restored = pid
		}
		return nil
	}
	_, err := container.Restore(ctx(t), opts)
	var he *hooks.HookError
	if !errors.As(err, &he) || he.Phase != hooks.StartContainer || he.ExitStatus != 3 || !strings.Contains(err.Error(), "startContainer says no") {
		t.Fatalf("want the startContainer hook's error, got %v", err)
	}
	if restored == 0 {
		t.Fatal("CRIU never told the restored pid")
	}
	if alive(restored) {
		t.Errorf("restored init %d still alive", restored)
	}
	c.assertGone(c.id, nil)
	time.Sleep(300 * time.Millisecond)
	if c.last() != before {
		t.Errorf("the restored program ran: counter %d -> %d", before, c.last())
	}
	want := []string{"prestart", "createRuntime", "createContainer", "startContainer", "poststop"}
	if got := phasesOf(hd.calls()); !slices.Equal(got, want) {
		t.Fatalf("hooks ran %v, want %v", got, want)
	}
	// The id is free again and the image still restores.
	c.editSpec(func(s *specs.Spec) { s.Hooks = nil })
	c.restore(images, c.id)
	c.waitCount(before + 3)
}

// TestAbortedRestoreRunsPoststop: a restore held before Finish has
// run its create hooks; aborting it deletes the container, so poststop
// runs, once, and nothing else.
func TestAbortedRestoreRunsPoststop(t *testing.T) {
	hd := newHookDir(t)
	c := newCtr(t, func(s *specs.Spec) { s.Mounts = append(s.Mounts, hd.mount()) })
	c.start()
	images := c.checkpoint(container.CheckpointOptions{})
	c.editSpec(func(s *specs.Spec) { s.Hooks = hd.all("") })
	r, err := container.StartRestore(ctx(t), c.restoreOpts(images, c.id))
	if err != nil {
		t.Fatal(err)
	}
	if got := phasesOf(hd.calls()); !slices.Equal(got, []string{"prestart", "createRuntime"}) {
		t.Fatalf("while held: hooks ran %v", got)
	}
	if err := r.Abort(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if got := phasesOf(hd.calls()); !slices.Equal(got, []string{"prestart", "createRuntime", "poststop"}) {
		t.Fatalf("after Abort: hooks ran %v", got)
	}
	c.assertGone(c.id, nil)
}
