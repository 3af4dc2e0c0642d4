package hooks

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	runc "github.com/containerd/go-runc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// script writes an executable shell script into dir.
func script(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func intp(n int) *int { return &n }

var testState = specs.State{
	Version: specs.Version, ID: "ctr-1", Status: specs.StateCreated, Pid: 4242,
	Bundle: "/bundles/ctr-1", Annotations: map[string]string{"k": "v"},
}

// TestRunnerSpecSemantics checks each hook field against what the hook
// observed.
func TestRunnerSpecSemantics(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	tests := []struct {
		name  string
		hook  func() specs.Hook
		check func(t *testing.T, got string)
	}{
		{
			name: "args[1:] are the arguments",
			hook: func() specs.Hook {
				return specs.Hook{Path: script(t, dir, "argv.sh", `echo "$0|$1|$2" > "$1"`), Args: []string{"custom-argv0", out, "second"}}
			},
			// A script's $0 is its path (the kernel replaces argv[0] when
			// it runs the interpreter): argv[0] shows with a binary, below.
			check: func(t *testing.T, got string) {
				if !strings.HasSuffix(strings.TrimSpace(got), "|"+out+"|second") {
					t.Errorf("args: %q", got)
				}
			},
		},
		{
			name: "argv[0] of a binary",
			hook: func() specs.Hook {
				return specs.Hook{Path: "/bin/sh", Args: []string{"not-sh", "-c", `cat /proc/$$/cmdline | tr '\0' ' ' > "$0"`, out}}
			},
			check: func(t *testing.T, got string) {
				if !strings.HasPrefix(got, "not-sh -c ") {
					t.Errorf("argv seen by the process: %q", got)
				}
			},
		},
		{
			name: "no args: argv is the path",
			hook: func() specs.Hook {
				return specs.Hook{Path: script(t, dir, "noargs.sh", `echo "$0 $#" > `+out)}
			},
			check: func(t *testing.T, got string) {
				if got != filepath.Join(dir, "noargs.sh")+" 0\n" {
					t.Errorf("got %q", got)
				}
			},
		},
		{
			name: "env is exactly the hook's",
			hook: func() specs.Hook {
				return specs.Hook{Path: script(t, dir, "env.sh", `tr '\0' '\n' < /proc/$$/environ > "$1"`), Args: []string{"env.sh", out}, Env: []string{"A=1", "B=two words"}}
			},
			check: func(t *testing.T, got string) {
				if got != "A=1\nB=two words\n" {
					t.Errorf("environment %q", got)
				}
			},
		},
		{
			name: "no env: empty environment, not ckpt's",
			hook: func() specs.Hook {
				return specs.Hook{Path: script(t, dir, "noenv.sh", `tr '\0' '\n' < /proc/$$/environ > "$1"`), Args: []string{"noenv.sh", out}}
			},
			check: func(t *testing.T, got string) {
				if got != "" {
					t.Errorf("environment %q", got)
				}
			},
		},
		{
			name: "the State JSON on stdin",
			hook: func() specs.Hook {
				return specs.Hook{Path: script(t, dir, "stdin.sh", `cat > "$1"`), Args: []string{"stdin.sh", out}}
			},
			check: func(t *testing.T, got string) {
				var st specs.State
				if err := json.Unmarshal([]byte(got), &st); err != nil {
					t.Fatalf("stdin %q: %v", got, err)
				}
				if st.Version != specs.Version || st.ID != "ctr-1" || st.Status != specs.StateCreated || st.Pid != 4242 ||
					st.Bundle != "/bundles/ctr-1" || st.Annotations["k"] != "v" {
					t.Errorf("state %+v", st)
				}
			},
		},
		{
			name: "runs in Dir",
			hook: func() specs.Hook {
				return specs.Hook{Path: script(t, dir, "cwd.sh", `pwd > "$1"`), Args: []string{"cwd.sh", out}}
			},
			check: func(t *testing.T, got string) {
				if got != dir+"\n" {
					t.Errorf("cwd %q, want %s", got, dir)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			os.Remove(out)
			r := &HookRunner{Dir: dir}
			if err := r.RunPhase(context.Background(), CreateRuntime, []specs.Hook{tt.hook()}, testState, RuntimeNamespace, 0); err != nil {
				t.Fatal(err)
			}
			tt.check(t, readFile(t, out))
		})
	}
}

// TestRunnerFailures: each way a hook fails gives an error that names the
// phase, the hook and how it ended.
func TestRunnerFailures(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name   string
		hook   specs.Hook
		limit  int
		check  func(t *testing.T, e *HookError)
		within time.Duration
	}{
		{
			name: "exit status and stderr",
			hook: specs.Hook{Path: script(t, dir, "fail.sh", `echo "no GPU here" >&2; exit 3`)},
			check: func(t *testing.T, e *HookError) {
				if e.ExitStatus != 3 || e.Stderr != "no GPU here\n" {
					t.Errorf("%+v", e)
				}
				for _, want := range []string{"poststart hook 0", filepath.Join(dir, "fail.sh"), "exit status 3", "no GPU here"} {
					if !strings.Contains(e.Error(), want) {
						t.Errorf("%q lacks %q", e.Error(), want)
					}
				}
			},
		},
		{
			name:  "stderr is bounded to its end",
			hook:  specs.Hook{Path: script(t, dir, "loud.sh", `i=0; while [ $i -lt 500 ]; do echo "line $i" >&2; i=$((i+1)); done; exit 1`)},
			limit: 64,
			check: func(t *testing.T, e *HookError) {
				if len(e.Stderr) > 64+3 || !strings.HasPrefix(e.Stderr, "...") || !strings.HasSuffix(e.Stderr, "line 499\n") {
					t.Errorf("stderr %q", e.Stderr)
				}
			},
		},
		{
			name:   "timeout kills the hook and what it started",
			hook:   specs.Hook{Path: script(t, dir, "slow.sh", `sleep 30; echo never`), Timeout: intp(1)},
			within: 5 * time.Second,
			check: func(t *testing.T, e *HookError) {
				if e.Timeout != time.Second || !strings.Contains(e.Error(), "timed out after 1s") {
					t.Errorf("%v (%+v)", e, e)
				}
			},
		},
		{
			name: "killed by a signal",
			hook: specs.Hook{Path: script(t, dir, "kill.sh", `kill -9 $$`)},
			check: func(t *testing.T, e *HookError) {
				if !strings.Contains(e.Error(), "killed by signal SIGKILL") {
					t.Errorf("%v", e)
				}
			},
		},
		{
			name: "missing",
			hook: specs.Hook{Path: filepath.Join(dir, "nope")},
			check: func(t *testing.T, e *HookError) {
				if !errors.Is(e, os.ErrNotExist) {
					t.Errorf("%v", e)
				}
			},
		},
		{
			name: "relative path",
			hook: specs.Hook{Path: "bin/true"},
			check: func(t *testing.T, e *HookError) {
				if !strings.Contains(e.Error(), "not absolute") {
					t.Errorf("%v", e)
				}
			},
		},
		{
			name: "zero timeout",
			hook: specs.Hook{Path: "/bin/true", Timeout: intp(0)},
			check: func(t *testing.T, e *HookError) {
				if !strings.Contains(e.Error(), "greater than zero") {
					t.Errorf("%v", e)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &HookRunner{OutputLimit: tt.limit}
			start := time.Now()
			err := r.RunPhase(context.Background(), Poststart, []specs.Hook{tt.hook}, testState, RuntimeNamespace, 0)
			var he *HookError
			if !errors.As(err, &he) {
				t.Fatalf("want a *HookError, got %v", err)
			}
			if he.Phase != Poststart || he.Path != tt.hook.Path {
				t.Errorf("phase %s path %s", he.Phase, he.Path)
			}
			if tt.within > 0 && time.Since(start) > tt.within {
				t.Errorf("took %s", time.Since(start))
			}
			tt.check(t, he)
		})
	}
}

// TestRunnerOrder: hooks of a phase run in order and the first failure
// stops the phase.
func TestRunnerOrder(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "log")
	appendHook := func(name string) specs.Hook {
		return specs.Hook{Path: script(t, dir, name+".sh", `echo `+name+` >> "$1"`), Args: []string{name, log}}
	}
	fail := specs.Hook{Path: script(t, dir, "fail.sh", `echo fail >> "$1"; exit 1`), Args: []string{"fail", log}}

	r := &HookRunner{}
	if err := r.RunPhase(context.Background(), Prestart, []specs.Hook{appendHook("a"), appendHook("b"), appendHook("c")}, testState, RuntimeNamespace, 0); err != nil {
		t.Fatal(err)
	}
	err := r.RunPhase(context.Background(), Prestart, []specs.Hook{appendHook("d"), fail, appendHook("e")}, testState, RuntimeNamespace, 0)
	var he *HookError
	if !errors.As(err, &he) || he.Index != 1 {
		t.Fatalf("want the second hook's error, got %v", err)
	}
	if got := strings.Fields(readFile(t, log)); !slices.Equal(got, []string{"a", "b", "c", "d", "fail"}) {
		t.Fatalf("ran %v", got)
	}
}

func TestHooksOf(t *testing.T) {
	h := &specs.Hooks{
		//lint:ignore SA1019 prestart is deprecated, and still run
		Prestart:        []specs.Hook{{Path: "/p"}},
		CreateRuntime:   []specs.Hook{{Path: "/cr"}},
		CreateContainer: []specs.Hook{{Path: "/cc"}},
		StartContainer:  []specs.Hook{{Path: "/sc"}},
		Poststart:       []specs.Hook{{Path: "/ps"}},
		Poststop:        []specs.Hook{{Path: "/pst"}},
	}
	for ph, want := range map[Phase]string{Prestart: "/p", CreateRuntime: "/cr", CreateContainer: "/cc", StartContainer: "/sc", Poststart: "/ps", Poststop: "/pst"} {
		if got := ph.HooksOf(h); len(got) != 1 || got[0].Path != want {
			t.Errorf("%s: %v", ph, got)
		}
		if ph.HooksOf(nil) != nil {
			t.Errorf("%s of nil hooks", ph)
		}
	}
}

// reapingMonitor plays a containerd shim's reaper: it collects its
// children itself, so os/exec's own wait finds nothing.
type reapingMonitor struct{}

func (reapingMonitor) Start(c *exec.Cmd) (chan runc.Exit, error) {
	if err := c.Start(); err != nil {
		return nil, err
	}
	ec := make(chan runc.Exit, 1)
	go func() {
		var ws unix.WaitStatus
		for {
			if _, err := unix.Wait4(c.Process.Pid, &ws, 0, nil); err != unix.EINTR {
				break
			}
		}
		status := ws.ExitStatus()
		if ws.Signaled() {
			status = 128 + int(ws.Signal())
		}
		ec <- runc.Exit{Pid: c.Process.Pid, Status: status}
	}()
	return ec, nil
}

func (m reapingMonitor) StartLocked(c *exec.Cmd) (chan runc.Exit, error) { return m.Start(c) }

func (reapingMonitor) Wait(c *exec.Cmd, ec chan runc.Exit) (int, error) {
	e := <-ec
	c.Wait() // flushes the output; its error (no child) is expected
	return e.Status, nil
}

// TestRunnerMonitor: under a reaper, the exit status comes from the
// monitor, in both namespaces, for hooks and action scripts.
func TestRunnerMonitor(t *testing.T) {
	dir := t.TempDir()
	ok := specs.Hook{Path: script(t, dir, "ok.sh", `cat > /dev/null; echo fine`)}
	bad := specs.Hook{Path: script(t, dir, "bad.sh", `echo "bad news" >&2; exit 3`)}
	pid := sibling(t)
	r := &HookRunner{Monitor: reapingMonitor{}}
	for _, ns := range []Namespace{RuntimeNamespace, ContainerNamespace} {
		if err := r.RunPhase(context.Background(), CreateContainer, []specs.Hook{ok}, testState, ns, pid); err != nil {
			t.Fatalf("%s: %v", ns, err)
		}
		err := r.RunPhase(context.Background(), CreateContainer, []specs.Hook{bad}, testState, ns, pid)
		var he *HookError
		if !errors.As(err, &he) || he.ExitStatus != 3 || he.Stderr != "bad news\n" {
			t.Fatalf("%s: want exit status 3 with stderr, got %v", ns, err)
		}
	}
	if err := runScript(context.Background(), bad.Path, nil, dir, "post-dump", reapingMonitor{}); err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("script under a reaper: %v", err)
	}
	if err := runScript(context.Background(), ok.Path, nil, dir, "post-dump", reapingMonitor{}); err != nil {
		t.Fatalf("script under a reaper: %v", err)
	}
}
