package hooks

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/ckpt-dev/ckpt/runtime/criu"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// hookCall is one hook run, as the recording hook logged it.
type hookCall struct {
	phase string
	state specs.State
}

// recorder is a hook that logs its phase (args[1]) and its stdin.
func recorder(t *testing.T, dir string) (hook func(phase string) specs.Hook, calls func() []hookCall) {
	t.Helper()
	log := filepath.Join(dir, "hooks.log")
	path := script(t, dir, "record.sh", `{ echo "$1"; cat; echo; } >> "$2"`)
	hook = func(phase string) specs.Hook { return specs.Hook{Path: path, Args: []string{"record", phase, log}} }
	calls = func() []hookCall {
		f, err := os.Open(log)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		} else if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		var out []hookCall
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			c := hookCall{phase: sc.Text()}
			if !sc.Scan() {
				t.Fatalf("truncated log after %s", c.phase)
			}
			if err := json.Unmarshal(sc.Bytes(), &c.state); err != nil {
				t.Fatalf("%s: %v", c.phase, err)
			}
			out = append(out, c)
		}
		return out
	}
	return hook, calls
}

func allHooks(hook func(string) specs.Hook) *specs.Hooks {
	return &specs.Hooks{
		//lint:ignore SA1019 prestart is deprecated, and still run
		Prestart: []specs.Hook{hook("prestart")}, CreateRuntime: []specs.Hook{hook("createRuntime")},
		CreateContainer: []specs.Hook{hook("createContainer")}, StartContainer: []specs.Hook{hook("startContainer")},
		Poststart: []specs.Hook{hook("poststart")}, Poststop: []specs.Hook{hook("poststop")},
	}
}

// sibling is a process in our own namespaces, standing in for a container
// init: the container-namespace hooks enter nothing and need no root.
func sibling(t *testing.T) int {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd.Process.Pid
}

func newLifecycle(t *testing.T, op Operation, c Container) *Lifecycle {
	t.Helper()
	l, err := NewLifecycle(Config{Op: op, Container: c, ImageDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestLifecycleRestore drives a restore's stages in CRIU's order: every
// hook runs once, in order, with its status and pid; poststop once.
func TestLifecycleRestore(t *testing.T) {
	dir := t.TempDir()
	hook, calls := recorder(t, dir)
	pid := sibling(t)
	c := Container{ID: "c1", Bundle: dir, Hooks: allHooks(hook), Annotations: map[string]string{"a": "b"}}
	l := newLifecycle(t, Restore, c)
	ctx := context.Background()
	for _, s := range []struct {
		stage criu.Stage
		pid   int
	}{{"pre-restore", 0}, {"setup-namespaces", pid}, {"post-setup-namespaces", 0}, {"orphan-pts-master", 0},
		{"post-restore", pid}, {"network-unlock", 0}, {"pre-resume", 0}, {"post-resume", 0}} {
		if err := l.Stage(ctx, s.stage, s.pid); err != nil {
			t.Fatalf("%s: %v", s.stage, err)
		}
		if s.stage == "pre-restore" && l.Created() {
			t.Fatal("created before setup-namespaces")
		}
	}
	if !l.Created() {
		t.Fatal("not created after the create hooks")
	}
	l.Delete(ctx)
	l.Delete(ctx)

	want := []struct {
		phase  string
		status specs.ContainerState
		pid    int
	}{
		{"prestart", specs.StateCreating, pid}, {"createRuntime", specs.StateCreating, pid},
		{"createContainer", specs.StateCreating, pid}, {"startContainer", specs.StateCreated, pid},
		{"poststart", specs.StateRunning, pid}, {"poststop", specs.StateStopped, 0},
	}
	got := calls()
	if len(got) != len(want) {
		t.Fatalf("ran %d hooks, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		g := got[i]
		if g.phase != w.phase || g.state.Status != w.status || g.state.Pid != w.pid {
			t.Errorf("hook %d: %s %s pid %d, want %s %s pid %d", i, g.phase, g.state.Status, g.state.Pid, w.phase, w.status, w.pid)
		}
		if g.state.ID != "c1" || g.state.Bundle != dir || g.state.Annotations["a"] != "b" || g.state.Version != specs.Version {
			t.Errorf("hook %d state %+v", i, g.state)
		}
	}
}

// TestLifecycleCatchUp: without setup-namespaces (a tree with no
// namespaces of its own), prestart and createRuntime run at post-restore.
func TestLifecycleCatchUp(t *testing.T) {
	dir := t.TempDir()
	hook, calls := recorder(t, dir)
	pid := sibling(t)
	l := newLifecycle(t, Restore, Container{ID: "c", Bundle: dir, Hooks: allHooks(hook)})
	for _, stage := range []criu.Stage{"pre-restore", "post-restore", "pre-resume"} {
		if err := l.Stage(context.Background(), stage, pid); err != nil {
			t.Fatal(err)
		}
	}
	var phases []string
	for _, c := range calls() {
		phases = append(phases, c.phase)
	}
	if want := []string{"prestart", "createRuntime", "createContainer", "startContainer"}; !slices.Equal(phases, want) {
		t.Fatalf("ran %v, want %v", phases, want)
	}

	// Stateless (one process per stage): post-restore cannot know, and
	// runs only its own phase.
	os.Remove(filepath.Join(dir, "hooks.log"))
	l, err := NewLifecycle(Config{Op: Restore, Container: Container{ID: "c", Bundle: dir, Hooks: allHooks(hook)}, Stateless: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Stage(context.Background(), "post-restore", pid); err != nil {
		t.Fatal(err)
	}
	if got := calls(); len(got) != 1 || got[0].phase != "createContainer" {
		t.Fatalf("stateless post-restore ran %+v", got)
	}
}

// TestLifecyclePolicies: what a failing hook or script does at each kind
// of stage.
func TestLifecyclePolicies(t *testing.T) {
	dir := t.TempDir()
	fail := specs.Hook{Path: script(t, dir, "fail.sh", `echo broken >&2; exit 7`)}
	failing := script(t, dir, "failscript.sh", `echo "$CRTOOLS_SCRIPT_ACTION" >> `+filepath.Join(dir, "ran")+`; exit 2`)
	okScript := script(t, dir, "okscript.sh", `echo "ok $CRTOOLS_SCRIPT_ACTION" >> `+filepath.Join(dir, "ran"))
	pid := sibling(t)
	tests := []struct {
		name    string
		op      Operation
		hooks   *specs.Hooks
		scripts string
		stage   criu.Stage
		policy  Policy // "" = no error
	}{
		//lint:ignore SA1019 prestart is deprecated, and still run
		{"prestart fails: abort", Restore, &specs.Hooks{Prestart: []specs.Hook{fail}}, "", "setup-namespaces", Abort},
		{"createRuntime fails: abort", Restore, &specs.Hooks{CreateRuntime: []specs.Hook{fail}}, "", "setup-namespaces", Abort},
		{"createContainer fails: abort", Restore, &specs.Hooks{CreateContainer: []specs.Hook{fail}}, "", "post-restore", Abort},
		{"startContainer fails: kill", Restore, &specs.Hooks{StartContainer: []specs.Hook{fail}}, "", "pre-resume", KillTree},
		{"poststart fails: kill", Restore, &specs.Hooks{Poststart: []specs.Hook{fail}}, "", "post-resume", KillTree},
		{"script fails at post-dump: abort", Dump, nil, failing + ":" + okScript, "post-dump", Abort},
		{"script fails at pre-restore: abort", Restore, nil, failing, "pre-restore", Abort},
		{"script fails at pre-resume: logged", Restore, nil, failing, "pre-resume", ""},
		{"script fails at network-unlock: logged", Dump, nil, failing, "network-unlock", ""},
		{"no scripts at query-ext-files", Dump, nil, failing, "query-ext-files", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			os.Remove(filepath.Join(dir, "ran"))
			c := Container{ID: "c", Bundle: dir, Hooks: tt.hooks}
			if tt.scripts != "" {
				c.Annotations = map[string]string{ActionScriptAnnotation: tt.scripts}
			}
			err := newLifecycle(t, tt.op, c).Stage(context.Background(), tt.stage, pid)
			var se *StageError
			if tt.policy == "" {
				if err != nil {
					t.Fatalf("want the failure only logged, got %v", err)
				}
				return
			}
			if !errors.As(err, &se) || se.Policy != tt.policy || se.Stage != tt.stage {
				t.Fatalf("want a %q StageError at %s, got %#v", tt.policy, tt.stage, err)
			}
			if tt.hooks != nil && !strings.Contains(err.Error(), "exit status 7") {
				t.Errorf("error %q hides the hook's", err)
			}
			if tt.scripts != "" {
				var scriptErr *ScriptError
				if !errors.As(err, &scriptErr) || scriptErr.ExitStatus != 2 {
					t.Errorf("want the script's error, got %v", err)
				}
				// CRIU runs every script of a stage, also after a failure.
				if n := strings.Count(tt.scripts, ":") + 1; len(strings.Fields(readFile(t, filepath.Join(dir, "ran")))) < n {
					t.Errorf("not every script ran: %q", readFile(t, filepath.Join(dir, "ran")))
				}
			}
		})
	}
	// A failing poststop is logged only.
	l := newLifecycle(t, Restore, Container{ID: "c", Bundle: dir, Hooks: &specs.Hooks{Poststop: []specs.Hook{fail}}})
	l.Delete(context.Background())
}

// TestLifecycleScriptEnv: the environment and working directory scripts
// get, stage by stage, as CRIU's CLI gives them.
func TestLifecycleScriptEnv(t *testing.T) {
	dir, images, work := t.TempDir(), t.TempDir(), t.TempDir()
	log := filepath.Join(dir, "env.log")
	s := script(t, dir, "env.sh", `echo "$CRTOOLS_SCRIPT_ACTION ${CRTOOLS_INIT_PID-unset} $CRTOOLS_IMAGE_DIR $(pwd) $0 $# ${KEEP_ME-}" >> `+log)
	// ckpt may itself run under CRIU's scripts: its own CRTOOLS_ values
	// must not leak.
	t.Setenv(EnvInitPid, "999")
	t.Setenv("KEEP_ME", "kept")
	l, err := NewLifecycle(Config{Op: Restore, Container: Container{ID: "c", Annotations: map[string]string{ActionScriptAnnotation: s}}, ImageDir: images, WorkDir: work})
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range []struct {
		stage criu.Stage
		pid   int
	}{{"pre-restore", 0}, {"setup-namespaces", 4321}, {"orphan-pts-master", 0}, {"post-restore", 4321}, {"pre-resume", 0}} {
		if err := l.Stage(context.Background(), st.stage, st.pid); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{
		"pre-restore unset " + images + " " + work + " " + s + " 0 kept",
		"setup-namespaces 4321 " + images + " " + work + " " + s + " 0 kept",
		"post-restore 4321 " + images + " " + work + " " + s + " 0 kept",
		"pre-resume 4321 " + images + " " + work + " " + s + " 0 kept",
	}
	if got := strings.Split(strings.TrimSpace(readFile(t, log)), "\n"); !slices.Equal(got, want) {
		t.Fatalf("scripts saw\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// NoActionScripts ignores the annotation.
	os.Remove(log)
	l, _ = NewLifecycle(Config{Op: Restore, Container: Container{Annotations: map[string]string{ActionScriptAnnotation: s}}, NoActionScripts: true})
	if err := l.Stage(context.Background(), "pre-restore", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(log); err == nil {
		t.Fatal("a script ran with NoActionScripts")
	}
}

func TestActionScripts(t *testing.T) {
	tests := []struct {
		value   *string
		want    []string
		wantErr bool
	}{
		{value: nil},
		{value: ptr("")},
		{value: ptr("/usr/local/bin/net.sh"), want: []string{"/usr/local/bin/net.sh"}},
		{value: ptr("/a.sh:/b/../c.sh"), want: []string{"/a.sh", "/c.sh"}},
		{value: ptr("a.sh"), wantErr: true},
		{value: ptr("/a.sh::/b.sh"), wantErr: true},
		{value: ptr("/a.sh /b.sh"), want: []string{"/a.sh /b.sh"}},
	}
	for _, tt := range tests {
		ann := map[string]string{"other": "x"}
		name := "absent"
		if tt.value != nil {
			ann[ActionScriptAnnotation] = *tt.value
			name = strconv.Quote(*tt.value)
		}
		t.Run(name, func(t *testing.T) {
			got, err := ActionScripts(ann)
			if (err != nil) != tt.wantErr || !slices.Equal(got, tt.want) {
				t.Fatalf("got %q, %v", got, err)
			}
			if _, err := NewLifecycle(Config{Container: Container{Annotations: ann}}); (err != nil) != tt.wantErr {
				t.Fatalf("NewLifecycle: %v", err)
			}
		})
	}
}

func TestScriptEnv(t *testing.T) {
	base := []string{"PATH=/bin", "CRTOOLS_SCRIPT_ACTION=stale", "CRTOOLS_OTHER=x", "HOME=/root"}
	tests := []struct {
		pid  int
		want []string
	}{
		{0, []string{"PATH=/bin", "HOME=/root", "CRTOOLS_SCRIPT_ACTION=post-dump", "CRTOOLS_IMAGE_DIR=/img"}},
		{12, []string{"PATH=/bin", "HOME=/root", "CRTOOLS_SCRIPT_ACTION=post-dump", "CRTOOLS_IMAGE_DIR=/img", "CRTOOLS_INIT_PID=12"}},
	}
	for _, tt := range tests {
		if got := ScriptEnv(base, "post-dump", "/img", tt.pid); !slices.Equal(got, tt.want) {
			t.Errorf("pid %d: %q", tt.pid, got)
		}
	}
}

func ptr(s string) *string { return &s }
