package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/ckpt-dev/ckpt/hooks"
	"github.com/ckpt-dev/ckpt/runtime/criu"
	"github.com/ckpt-dev/ckpt/runtime/proc"
	"github.com/ckpt-dev/ckpt/runtime/runcstate"
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"
)

func init() {
	commands = append(commands, &cli.Command{
		Name:  "action-script",
		Usage: "run a bundle's OCI hooks as a CRIU action script",
		Description: `Runs the OCI hooks of the bundle's config.json that ckpt runs at the CRIU
stage named by CRTOOLS_SCRIPT_ACTION (see "Hooks and action scripts" in
docs/internals.md), with the State's pid taken from CRTOOLS_INIT_PID. It exits
non-zero when a hook fails, which fails the stage as CRIU fails it for any
action script; where CRIU ignores a failing script (pre-resume,
post-resume) it first kills the restored tree itself.

CRIU 4.1 executes an action script by its path alone, without a shell and
without arguments, so give it a wrapper:

    printf '#!/bin/sh\nexec ckpt action-script --bundle /path/to/bundle\n' > /usr/local/bin/ckpt-hooks-mybundle
    chmod +x /usr/local/bin/ckpt-hooks-mybundle
    criu restore ... --action-script /usr/local/bin/ckpt-hooks-mybundle

(or leave --bundle out of the wrapper and set CKPT_BUNDLE in criu's
environment). Each stage runs in a new process, which cannot know whether
CRIU sent setup-namespaces: a tree without namespaces of its own gets none,
and so no prestart/createRuntime here.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "bundle", Aliases: []string{"b"}, Required: true, EnvVars: []string{"CKPT_BUNDLE"}, Usage: "bundle whose config.json has the hooks"},
			&cli.StringFlag{Name: "id", Usage: "the container id hooks are told (default: the bundle directory's name)"},
		},
		Action: actionScriptAction,
	})
}

func actionScriptAction(c *cli.Context) error {
	stage := criu.Stage(os.Getenv(hooks.EnvScriptAction))
	if stage == "" {
		return cli.Exit("ckpt action-script: "+hooks.EnvScriptAction+" is not set: run it as a CRIU action script", 2)
	}
	bundle, err := filepath.Abs(c.String("bundle"))
	if err != nil {
		return err
	}
	spec, _, err := runcstate.LoadSpec(bundle)
	if err != nil {
		return fmt.Errorf("ckpt action-script: %w", err)
	}
	pid := 0
	if v := os.Getenv(hooks.EnvInitPid); v != "" {
		if pid, err = strconv.Atoi(v); err != nil || pid <= 0 {
			return fmt.Errorf("ckpt action-script: %s=%q is not a pid", hooks.EnvInitPid, v)
		}
	}
	id := c.String("id")
	if id == "" {
		id = filepath.Base(bundle)
	}
	l, err := hooks.NewLifecycle(hooks.Config{
		Op:              hooks.OperationOf(stage),
		Container:       hooks.Container{ID: id, Bundle: bundle, Hooks: spec.Hooks, Annotations: spec.Annotations},
		NoActionScripts: true, Stateless: true,
	})
	if err != nil {
		return err
	}
	err = l.Stage(c.Context, stage, pid)
	if err == nil {
		return nil
	}
	var se *hooks.StageError
	if errors.As(err, &se) && se.Policy == hooks.KillTree && pid > 0 {
		// CRIU only logs a failing script at this stage and would let
		// the restored program run.
		n := killTree(pid)
		err = fmt.Errorf("%w; killed the restored tree (%d process(es))", err, n)
	}
	return cli.Exit(fmt.Sprintf("ckpt action-script: %s: %v", stage, err), 1)
}

// killTree SIGKILLs pid and all its descendants and returns how many it
// signalled. The tree is listed before any of it dies, so that nothing is
// reparented out of reach meanwhile.
func killTree(pid int) int {
	tree := []int{pid}
	for i := 0; i < len(tree); i++ {
		tree = append(tree, proc.Children(tree[i])...)
	}
	for _, p := range tree {
		unix.Kill(p, unix.SIGKILL)
	}
	return len(tree)
}
