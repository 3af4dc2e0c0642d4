package nerdctl_test

import (
	"fmt"
	"strings"
	"testing"
)

// ckptRuntime and runcRuntime are nerdctl's --runtime values.
const (
	ckptRuntime = "io.containerd.ckpt.v2"
	runcRuntime = "io.containerd.runc.v2"
)

// TestNerdctlCheckpointRestore runs every scenario on ckpt's shim.
func TestNerdctlCheckpointRestore(t *testing.T) {
	e := start(t)
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			o := run(t, e, testContext(t), ckptRuntime, sc)
			check(t, sc, o)
		})
	}
}

func check(t *testing.T, sc scenario, o *outcome) {
	t.Helper()
	if o.checkpointErr != nil {
		t.Fatalf("checkpoint create: %v", o.checkpointErr)
	}
	// nerdctl sends checkpoint options to runc's shim only: the
	// annotation, not the flag, leaves the container running.
	if o.runningAfter != sc.annotateLeaveRunning {
		t.Errorf("running after the checkpoint: %t; want %t (annotation io.ckpt.checkpoint.leave-running: %t)",
			o.runningAfter, sc.annotateLeaveRunning, sc.annotateLeaveRunning)
	}
	if o.networkReleased != nil {
		t.Errorf("the stopped container's network (poststop hook): %v", o.networkReleased)
	}
	if o.startErr != nil {
		t.Fatalf("start --checkpoint: %v", o.startErr)
	}
	if err := o.continues(); err != nil {
		t.Fatal(err)
	}
	t.Logf("checkpointed between counts %d and %d; restored: %v", o.before, o.after, o.restored)
	wantEth0 := 1
	if sc.net == "none" {
		wantEth0 = 0
	}
	// The restored process's first line already sees its eth0: the
	// createRuntime hook wired the network before the process ran on.
	for _, l := range o.restored {
		if l.eth0 != wantEth0 {
			t.Errorf("restored count %d sees %d eth0, want %d: %v", l.n, l.eth0, wantEth0, o.restored)
			break
		}
	}
	if o.sameIP != nil {
		t.Errorf("the address: %v", o.sameIP)
	}
	for what, err := range map[string]error{"exec": o.execErr, "stop": o.stopErr, "rm": o.rmErr} {
		if err != nil {
			t.Errorf("%s after the restore: %v", what, err)
		}
	}
	if len(o.leftovers) > 0 {
		t.Errorf("left behind after rm:\n%s", strings.Join(o.leftovers, "\n"))
	}
}

// TestNerdctlRuncPeer runs the scenarios on containerd's runc shim, for
// comparison: reported, never failed.
func TestNerdctlRuncPeer(t *testing.T) {
	e := start(t)
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			o := run(t, e, testContext(t), runcRuntime, sc)
			t.Logf("runc shim through nerdctl (%s):\n  %s", sc.name, strings.Join(o.summary(), "\n  "))
		})
	}
}

// summary is the outcome in words.
func (o *outcome) summary() []string {
	text := func(err error) string {
		if err == nil {
			return "ok"
		}
		return "fails: " + err.Error()
	}
	s := []string{"checkpoint: " + text(o.checkpointErr), fmt.Sprintf("running after checkpoint: %t", o.runningAfter)}
	if o.checkpointErr != nil {
		return s
	}
	s = append(s, "network released: "+text(o.networkReleased), "start --checkpoint: "+text(o.startErr))
	if o.startErr != nil {
		return s
	}
	return append(s, "counter continues: "+text(o.continues()), fmt.Sprintf("restored lines: %v", o.restored),
		"same address: "+text(o.sameIP), "exec: "+text(o.execErr), "stop: "+text(o.stopErr), "rm: "+text(o.rmErr),
		fmt.Sprintf("leftovers: %v", o.leftovers))
}
