package hooks

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ckpt-dev/ckpt/runtime/criu"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/log"
)

// ActionScriptAnnotation declares a container's CRIU action scripts: the
// absolute host path of a script, or several separated by ':' (as in
// PATH). ckpt runs them where CRIU's `--action-script` would run them, in
// the order given (CRIU's CLI runs several in the reverse order of its
// flags).
const ActionScriptAnnotation = "io.ckpt.action-script"

// The environment CRIU 4.1 gives an action script (criu/action-scripts.c):
// the stage, the image directory and, once CRIU knows it, the root task's
// host pid. CRIU sets the last one once and keeps it for later stages. A
// script inherits everything else from CRIU's (here ckpt's) environment;
// its cwd is CRIU's work dir.
const (
	EnvScriptAction = "CRTOOLS_SCRIPT_ACTION"
	EnvImageDir     = "CRTOOLS_IMAGE_DIR"
	EnvInitPid      = "CRTOOLS_INIT_PID"
)

// ActionScripts returns the scripts the annotations declare.
func ActionScripts(annotations map[string]string) ([]string, error) {
	v, ok := annotations[ActionScriptAnnotation]
	if !ok || v == "" {
		return nil, nil
	}
	var out []string
	for _, p := range strings.Split(v, ":") {
		if !filepath.IsAbs(p) {
			return nil, fmt.Errorf("annotation %s=%q: %q is not an absolute host path (several are separated by ':')", ActionScriptAnnotation, v, p)
		}
		out = append(out, filepath.Clean(p))
	}
	return out, nil
}

// ScriptEnv returns base without CRTOOLS_ variables, plus the ones CRIU's
// CLI sets for stage. initPid 0 leaves CRTOOLS_INIT_PID unset, as CRIU
// does before it knows the root task.
func ScriptEnv(base []string, stage criu.Stage, imageDir string, initPid int) []string {
	env := make([]string, 0, len(base)+3)
	for _, kv := range base {
		if !strings.HasPrefix(kv, "CRTOOLS_") {
			env = append(env, kv)
		}
	}
	env = append(env, EnvScriptAction+"="+string(stage), EnvImageDir+"="+imageDir)
	if initPid > 0 {
		env = append(env, EnvInitPid+"="+strconv.Itoa(initPid))
	}
	return env
}

// ScriptError is an action script that failed.
type ScriptError struct {
	Stage criu.Stage
	Path  string
	// ExitStatus is -1 when the script did not exit normally.
	ExitStatus int
	Signal     syscall.Signal
	Stderr     string
	Err        error
}

func (e *ScriptError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "action script %s at %s: ", e.Path, e.Stage)
	describeEnd(&b, e.ExitStatus, e.Signal, 0, e.Err, e.Stderr)
	return b.String()
}

func (e *ScriptError) Unwrap() error { return e.Err }

// runScript runs one action script the way CRIU does: its path as both
// the file and argv[0], no arguments, no stdin. Its output, which CRIU
// writes to its log, goes to ckpt's log.
func runScript(ctx context.Context, path string, env []string, dir string, stage criu.Stage, mon runc.ProcessMonitor) error {
	cmd := exec.CommandContext(ctx, path)
	cmd.Args = []string{path}
	cmd.Env = env
	cmd.Dir = dir
	run := prepare(cmd, DefaultOutputLimit, mon)
	logger := log.G(ctx).WithFields(log.Fields{"stage": stage, "script": path})
	start := time.Now()
	if err := run.start(); err != nil {
		return &ScriptError{Stage: stage, Path: path, ExitStatus: -1, Err: err}
	}
	res := run.wait()
	logger = logger.WithFields(log.Fields{"ms": time.Since(start).Milliseconds(), "stdout": res.stdout, "stderr": res.stderr})
	if res.ok() {
		logger.Debug("action script ran")
		return nil
	}
	logger.WithError(res.err).Warn("action script failed")
	return &ScriptError{Stage: stage, Path: path, ExitStatus: res.exitStatus, Signal: res.signal, Stderr: res.stderr, Err: res.err}
}
