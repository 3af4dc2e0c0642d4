package runc_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/ckpt-dev/ckpt/hooks"
	"github.com/ckpt-dev/ckpt/integration/internal/testutil"
	"github.com/ckpt-dev/ckpt/runtime/container"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// CRIU action scripts: declared on a container and run by ckpt as CRIU's
// CLI runs them, and `ckpt action-script` run by plain CRIU.

// actionLine is one run of an action script: who ran it (ckpt or criu),
// the stage, CRTOOLS_INIT_PID and what CRTOOLS_IMAGE_DIR resolves to.
type actionLine struct{ who, action, pid, dir string }

// TestActionScriptsLikeCRIU runs one container's checkpoint and restore
// with two recording action scripts: one declared on the container (ckpt
// runs it) and one given to the very same criu process through
// CRIU_CONFIG_FILE ("action-script", the config form of --action-script:
// CRIU runs it itself, after ckpt's answer). Both see the same stages in
// the same order, the same real CRTOOLS_INIT_PID, and image dirs that are
// the same directory.
func TestActionScriptsLikeCRIU(t *testing.T) {
	requireAll(t)
	dir := t.TempDir()
	log := filepath.Join(dir, "actions.log")
	rec := func(who string) string {
		p := filepath.Join(dir, who+".sh")
		body := fmt.Sprintf(`#!/bin/sh
d=none
[ -d "$CRTOOLS_IMAGE_DIR" ] && d=$(cd "$CRTOOLS_IMAGE_DIR" && pwd -P)
echo "%s $CRTOOLS_SCRIPT_ACTION ${CRTOOLS_INIT_PID-unset} $d" >> %s
`, who, log)
		if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	conf := filepath.Join(dir, "criu.conf")
	if err := os.WriteFile(conf, []byte("action-script "+rec("criu")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CRIU_CONFIG_FILE", conf)
	c := newCtr(t, func(s *specs.Spec) {
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		s.Annotations[hooks.ActionScriptAnnotation] = rec("ckpt")
	})
	c.start()
	_, initPid := c.state(c.id)
	images := c.checkpoint(container.CheckpointOptions{})
	dumped := readFile(log)
	os.Remove(log)
	before := c.last()
	pid := c.restore(images, c.id)
	c.waitCount(before + 3)

	imagesDir, err := filepath.EvalSymlinks(images)
	if err != nil {
		t.Fatal(err)
	}
	for _, run := range []struct {
		name    string
		log     string
		actions []string
		pid     int
	}{
		{"dump", dumped, []string{"pre-dump", "network-lock", "post-dump"}, initPid},
		{"restore", readFile(log), []string{"pre-restore", "setup-namespaces", "post-setup-namespaces", "post-restore", "network-unlock", "pre-resume", "post-resume"}, pid},
	} {
		var byWho = map[string][]actionLine{}
		for _, l := range strings.Split(strings.TrimSpace(run.log), "\n") {
			f := strings.Fields(l)
			if len(f) != 4 {
				t.Fatalf("%s: action log line %q", run.name, l)
			}
			byWho[f[0]] = append(byWho[f[0]], actionLine{f[0], f[1], f[2], f[3]})
		}
		ck, cr := byWho["ckpt"], byWho["criu"]
		actions := func(ls []actionLine) (a []string) {
			for _, l := range ls {
				a = append(a, l.action)
			}
			return a
		}
		if !slices.Equal(actions(cr), run.actions) {
			t.Errorf("%s: CRIU ran its script at %v, the test expects %v", run.name, actions(cr), run.actions)
		}
		if !slices.Equal(actions(ck), actions(cr)) {
			t.Fatalf("%s: ckpt ran the script at %v, CRIU at %v", run.name, actions(ck), actions(cr))
		}
		for i := range cr {
			a, b := ck[i], cr[i]
			if a.pid != b.pid {
				t.Errorf("%s %s: CRTOOLS_INIT_PID %s under ckpt, %s under CRIU", run.name, a.action, a.pid, b.pid)
			}
			if b.pid != "unset" && b.pid != strconv.Itoa(run.pid) {
				t.Errorf("%s %s: CRTOOLS_INIT_PID %s, the real pid is %d", run.name, a.action, b.pid, run.pid)
			}
			// CRIU closes the image dir before post-resume: its path then
			// leads nowhere; ckpt's still does.
			if b.dir != "none" && a.dir != b.dir {
				t.Errorf("%s %s: image dir %s under ckpt, %s under CRIU", run.name, a.action, a.dir, b.dir)
			}
			if a.dir != imagesDir {
				t.Errorf("%s %s: ckpt's CRTOOLS_IMAGE_DIR is %s, want %s", run.name, a.action, a.dir, imagesDir)
			}
		}
	}
}

// TestActionScriptCancelsCheckpoint: a script failing at post-dump fails
// the checkpoint as under CRIU's CLI: CRIU resumes the container.
func TestActionScriptCancelsCheckpoint(t *testing.T) {
	requireAll(t)
	script := filepath.Join(t.TempDir(), "veto.sh")
	os.WriteFile(script, []byte("#!/bin/sh\n[ \"$CRTOOLS_SCRIPT_ACTION\" = post-dump ] || exit 0\necho 'not now' >&2\nexit 1\n"), 0o755)
	c := newCtr(t, func(s *specs.Spec) {
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		s.Annotations[hooks.ActionScriptAnnotation] = script
	})
	c.start()
	_, err := container.Checkpoint(ctx(t), container.CheckpointOptions{Root: c.root, ID: c.id, ImagePath: filepath.Join(t.TempDir(), "images")})
	var se *hooks.ScriptError
	if !errors.As(err, &se) || se.Stage != "post-dump" || !strings.Contains(err.Error(), "not now") {
		t.Fatalf("want the post-dump script's error, got %v", err)
	}
	if st, _ := c.state(c.id); st != "running" {
		t.Fatalf("container %q after a vetoed checkpoint", st)
	}
	c.waitCount(c.last() + 3)
	c.assertContinuous()
}

// TestActionScriptCommand restores a process tree in its own pid, uts and
// ipc namespaces with plain `criu restore --action-script`, the script
// being a wrapper around `ckpt action-script --bundle DIR`: the bundle's
// hooks run at their stages, in the restored tree's namespaces where the
// spec says; a dump runs none.
func TestActionScriptCommand(t *testing.T) {
	testutil.Require(t, "root", "criu", "unshare", "setsid")
	bin := buildCLI(t)
	hd := newHookDir(t)
	// The tree shares our mount namespace: paths are the host's
	// everywhere, so the container-side log is the host's too.
	spec := specs.Spec{Version: specs.Version, Hooks: hd.all(""), Annotations: map[string]string{"who": "cli"}}
	for _, l := range [][]specs.Hook{spec.Hooks.CreateContainer, spec.Hooks.StartContainer} {
		l[0].Path, l[0].Args[2] = filepath.Join(hd.dir, "record.sh"), filepath.Join(hd.dir, "log")
	}
	bundle := filepath.Join(t.TempDir(), "mybundle")
	os.Mkdir(bundle, 0o755)
	data, _ := json.Marshal(&spec)
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	wrapper := filepath.Join(hd.dir, "ckpt-hooks")
	hd.write("ckpt-hooks", fmt.Sprintf("#!/bin/sh\nexec %s action-script --bundle %s\n", bin, bundle))

	tree := exec.Command("unshare", "--pid", "--uts", "--ipc", "--fork", "setsid", "sh", "-c",
		"exec </dev/null >/dev/null 2>&1; hostname hooked; exec sleep 1000")
	tree.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := tree.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tree.Process.Kill(); tree.Wait() })
	var root int
	waitFor(t, "the tree's init", func() bool {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", tree.Process.Pid, tree.Process.Pid))
		root, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		return root > 0
	})
	images := filepath.Join(t.TempDir(), "images")
	os.Mkdir(images, 0o755)
	run(t, "criu", "dump", "-t", itoa(root), "-D", images, "-o", "dump.log", "--action-script", wrapper)
	tree.Wait()
	if got := hd.calls(); len(got) != 0 {
		t.Fatalf("a dump ran hooks: %v", phasesOf(got))
	}

	pidFile := filepath.Join(t.TempDir(), "pid")
	run(t, "criu", "restore", "-d", "-D", images, "-o", "restore.log", "--pidfile", pidFile, "--action-script", wrapper)
	pid, _ := strconv.Atoi(strings.TrimSpace(readFile(pidFile)))
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL); reap(pid) })
	if !alive(pid) {
		t.Fatalf("restored tree %d is not running", pid)
	}
	got := hd.calls()
	if want := []string{"prestart", "createRuntime", "createContainer", "startContainer", "poststart"}; !slices.Equal(phasesOf(got), want) {
		t.Fatalf("hooks ran %v, want %v", phasesOf(got), want)
	}
	for _, h := range got {
		inCtr := h.phase == "createContainer" || h.phase == "startContainer"
		wantPid, wantNS := pid, nsLink(t, strconv.Itoa(os.Getpid()), "pid")
		if inCtr {
			wantPid, wantNS = 1, nsLink(t, strconv.Itoa(pid), "pid")
		}
		if h.state.Pid != wantPid || h.pidNS != wantNS || h.state.ID != "mybundle" || h.state.Bundle != bundle || h.state.Annotations["who"] != "cli" {
			t.Errorf("%s: state %+v in %s, want pid %d in %s", h.phase, h.state, h.pidNS, wantPid, wantNS)
		}
	}

	// A failing startContainer: CRIU only logs a failing pre-resume
	// script, so `ckpt action-script` kills the tree itself; the restore
	// then fails and nothing runs.
	syscall.Kill(pid, syscall.SIGKILL)
	reap(pid)
	hd.reset()
	spec.Hooks.StartContainer[0].Path = filepath.Join(hd.dir, "fail.sh")
	data, _ = json.Marshal(&spec)
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Remove(pidFile)
	out, err := command(t, "criu", "restore", "-d", "-D", images, "-o", "restore2.log", "--pidfile", pidFile, "--action-script", wrapper).CombinedOutput()
	if err == nil {
		t.Fatalf("criu restore succeeded although startContainer failed: %s", out)
	}
	got = hd.calls()
	if want := []string{"prestart", "createRuntime", "createContainer", "startContainer"}; !slices.Equal(phasesOf(got), want) {
		t.Fatalf("hooks ran %v, want %v", phasesOf(got), want)
	}
	if failed := got[len(got)-1].state.Pid; failed != 1 {
		t.Errorf("startContainer state pid %d", failed)
	}
	if prestart := got[0].state.Pid; alive(prestart) {
		t.Errorf("restored tree %d survived the failed startContainer", prestart)
	}
	criuLog := readFile(filepath.Join(images, "restore2.log"))
	if !strings.Contains(criuLog, "ckpt action-script: pre-resume: startContainer hook 0") || !strings.Contains(criuLog, "startContainer says no") {
		t.Errorf("the hook's failure is not in CRIU's log:\n%s", tail(criuLog))
	}
}
