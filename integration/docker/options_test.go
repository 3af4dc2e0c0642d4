package docker_test

import (
	"strings"
	"testing"
)

// testOptions covers how a Docker user chooses CRIU options, given that
// Docker passes a runtime other than runc no checkpoint options at all.
func testOptions(t *testing.T, e *engine) {
	t.Run("defaults", func(t *testing.T) {
		name := "opt-defaults"
		e.runCounter(t, name, "--runtime", "ckpt")
		e.checkpointExit(t, name, "def1")
		o := e.checkpointMetadata(t, name, "def1").Options
		if o.LeaveRunning || o.TCPEstablished || o.FileLocks || !o.EmptyNetNS {
			t.Fatalf("options of a checkpoint Docker sent no options for: %+v; want exit, an empty network namespace, nothing else", o)
		}
	})

	t.Run("annotations", func(t *testing.T) {
		name := "opt-annotations"
		e.runCounter(t, name, "--runtime", "ckpt",
			"--annotation", "io.ckpt.checkpoint.leave-running=true",
			"--annotation", "io.ckpt.checkpoint.tcp-established=true")
		e.must(t, "checkpoint", "create", name, "ann1")
		if !e.running(t, name) {
			t.Fatal("io.ckpt.checkpoint.leave-running=true: the container stopped at the checkpoint")
		}
		o := e.checkpointMetadata(t, name, "ann1").Options
		if !o.LeaveRunning || !o.TCPEstablished || !o.EmptyNetNS {
			t.Fatalf("checkpoint options with the annotations: %+v; want leave_running, tcp_established", o)
		}
		// The container went on counting; restored, it counts again from
		// the checkpoint's state.
		e.waitCounter(t, name, last(t, e.counter(t, name))+5)
		e.must(t, "stop", "--time", "1", name)
		stopped := len(e.counter(t, name))
		ckptRuntime().restore(t, e, name, "ann1", false)
		vals := e.waitLines(t, name, stopped+3)
		if first := vals[stopped]; first <= 0 || first > vals[stopped-1] {
			t.Fatalf("first value after restoring the leave-running checkpoint: %d; want an earlier state than %d, not a fresh start", first, vals[stopped-1])
		}
		e.must(t, "rm", "-f", name)
	})

	t.Run("runtime-config-path", func(t *testing.T) {
		// daemon.json: "ckpt-lr": {"runtimeType": "io.containerd.ckpt.v2",
		// "options": {"ConfigPath": ".../ckpt-leave-running.json"}}.
		name := "opt-config"
		e.runCounter(t, name, "--runtime", "ckpt-lr")
		e.must(t, "checkpoint", "create", name, "cfg1")
		if !e.running(t, name) {
			t.Fatal("runtime ckpt-lr (leave_running in its ConfigPath): the container stopped at the checkpoint")
		}
		if o := e.checkpointMetadata(t, name, "cfg1").Options; !o.LeaveRunning || !o.FileLocks {
			t.Fatalf("checkpoint options of runtime ckpt-lr: %+v; want leave_running, file_locks", o)
		}
		e.must(t, "rm", "-f", name)
	})

	t.Run("misspelt-annotation", func(t *testing.T) {
		name := "opt-typo"
		out, err := e.docker("run", "-d", "--name", name, "--runtime", "ckpt",
			"--annotation", "io.ckpt.checkpoint.leave-runing=true", imageName, "sleep", "60")
		e.docker("rm", "-f", name)
		if err == nil || !strings.Contains(out, "unknown checkpoint option") {
			t.Fatalf("docker run with a misspelt checkpoint annotation: %v\n%s\nwant it refused", err, out)
		}
	})

	t.Run("leave-running-flag", func(t *testing.T) {
		// Docker passes --leave-running only to io.containerd.runc.v2.
		name := "opt-flag"
		e.runCounter(t, name, "--runtime", "ckpt")
		e.must(t, "checkpoint", "create", "--leave-running", name, "flag1")
		if e.running(t, name) {
			t.Errorf("DOCKER CHANGED: docker %s now passes --leave-running to a custom runtime; update docs/guide-docker.md", e.version)
		} else {
			t.Logf("docker %s: checkpoint create --leave-running stops a ckpt container (Docker sends no options); the annotation io.ckpt.checkpoint.leave-running=true is the way", e.version)
		}
		e.must(t, "rm", "-f", name)
	})
}
