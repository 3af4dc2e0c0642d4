package docker_test

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// runtimeCase is a Docker runtime the scenarios run through: ckpt, whose
// every step must work, or containerd's runc shim, the peer, whose known
// results on each Docker version are asserted so that a change shows up,
// and whose known failures do not fail the suite.
type runtimeCase struct {
	name string // docker run --runtime
	peer bool
}

func ckptRuntime() runtimeCase { return runtimeCase{name: "ckpt"} }

func runcPeer() runtimeCase { return runtimeCase{name: "runc", peer: true} }

// peerRestoreFailure is how `docker start --checkpoint` of a container
// with its own network namespace fails through the runc shim ("" when it
// works).
func peerRestoreFailure(version string, rightAfterCheckpoint bool) string {
	switch {
	case rightAfterCheckpoint:
		// Docker re-uploads a tar identical to the checkpoint's, whose
		// blob containerd has not collected yet.
		return "already exists"
	case version == "28":
		// Docker 28 wires the network into /proc/<pid>/ns/net after
		// Create; the runc shim restores only in Start, so the pid is 0
		// (containerd#12141).
		return "/proc/0/ns/net"
	}
	return ""
}

// restore runs `docker start --checkpoint` and reports whether the
// scenario goes on. ckpt must restore right away; the runc shim is given
// the garbage collection "a few seconds later" would bring, except where
// the scenario is that it gets none.
func (rt runtimeCase) restore(t *testing.T, e *engine, name, checkpoint string, rightAfterCheckpoint bool) bool {
	t.Helper()
	if rt.peer && !rightAfterCheckpoint {
		e.forceGC(t)
	}
	out, err := e.docker("start", "--checkpoint", checkpoint, name)
	if !rt.peer {
		if err != nil {
			t.Fatalf("ckpt: docker start --checkpoint %s %s on Docker %s: %v\n%s", checkpoint, name, e.version, err, out)
		}
		return true
	}
	want := peerRestoreFailure(e.version, rightAfterCheckpoint)
	switch {
	case want == "" && err == nil:
		t.Logf("runc shim: start --checkpoint works on Docker %s", e.version)
		return true
	case want == "":
		t.Errorf("PEER CHANGED: runc shim: start --checkpoint used to work on Docker %s and now fails: %v\n%s", e.version, err, out)
		return false
	case err == nil:
		t.Errorf("PEER CHANGED: runc shim: start --checkpoint works on Docker %s now; it used to fail with %q", e.version, want)
		return true
	case !strings.Contains(out, want):
		t.Errorf("PEER CHANGED: runc shim: start --checkpoint on Docker %s fails differently (used to be %q): %s", e.version, want, out)
		return false
	}
	t.Logf("runc shim: start --checkpoint failed as expected on Docker %s: %s", e.version, out)
	return false
}

// afterPeerFailure checks that a container the peer failed to restore can
// still be removed, as it can on both versions.
func afterPeerFailure(t *testing.T, e *engine, name string) {
	t.Helper()
	if out, err := e.docker("rm", "-f", name); err != nil {
		t.Errorf("PEER CHANGED: runc shim: docker rm -f after a failed restore on Docker %s fails now: %v\n%s", e.version, err, out)
		return
	}
	e.gone(t, name)
}

// peerCorruptFailure is how the runc shim reports a corrupted checkpoint:
// on 28 the network wiring fails first; on 26 runc gives no reason.
func peerCorruptFailure(version string) string {
	if version == "28" {
		return "/proc/0/ns/net"
	}
	return "criu failed: type RESTORE errno 0"
}

var scenarios = []struct {
	name string
	run  func(t *testing.T, e *engine, rt runtimeCase)
}{
	{"bridge-counter", testBridgeCounter},
	{"network-none", testNetworkNone},
	{"tty", testTTY},
	{"start-right-after-checkpoint", testRightAfterCheckpoint},
	{"corrupted-checkpoint", testCorruptedCheckpoint},
}

// runCounter starts the counter container and waits for it to count.
func (e *engine) runCounter(t *testing.T, name string, args ...string) {
	t.Helper()
	run := append([]string{"run", "-d", "--name", name}, args...)
	e.must(t, append(run, imageName, "sh", "-c", counterScript)...)
	t.Cleanup(func() { e.docker("rm", "-f", name) })
	e.waitCounter(t, name, 5)
}

// checkpointExit runs `docker checkpoint create` (Docker's default: the
// container stops) and returns the counter's last value.
func (e *engine) checkpointExit(t *testing.T, name, checkpoint string) int {
	t.Helper()
	e.must(t, "checkpoint", "create", name, checkpoint)
	if e.running(t, name) {
		t.Fatalf("%s still runs after docker checkpoint create (Docker's default is to stop it)", name)
	}
	return last(t, e.counter(t, name))
}

// A container on the default bridge: two checkpoint/restore cycles, the
// counter continues, the IP stays and answers both ways, exec works,
// checkpoint ls/rm, stop and rm.
func testBridgeCounter(t *testing.T, e *engine, rt runtimeCase) {
	name := rt.name + "-bridge"
	e.runCounter(t, name, "--runtime", rt.name)
	ip := e.inspect(t, name, "{{.NetworkSettings.IPAddress}}")
	if ip == "" {
		t.Fatalf("%s has no IP on the default bridge", name)
	}
	e.ping(t, ip)
	for _, cp := range []string{"cycle1", "cycle2"} {
		before := e.checkpointExit(t, name, cp)
		if !rt.restore(t, e, name, cp, false) {
			afterPeerFailure(t, e, name)
			return
		}
		assertContinuous(t, name, e.waitCounter(t, name, before+5))
		if got := e.inspect(t, name, "{{.NetworkSettings.IPAddress}}"); got != ip {
			t.Fatalf("%s: IP %s after restore %s; it was %s", name, got, cp, ip)
		}
		if out := e.must(t, "exec", name, "ip", "-4", "addr", "show", "eth0"); !strings.Contains(out, " "+ip+"/") {
			t.Fatalf("%s: eth0 inside the restored container has not %s:\n%s", name, ip, out)
		}
		e.ping(t, ip)
		e.assertNetworkFiles(t, name, ip)
		gateway := e.inspect(t, name, "{{.NetworkSettings.Gateway}}")
		e.must(t, "exec", name, "ping", "-c", "1", "-W", "5", gateway)
		if v, out := e.readCount(t, name); v <= before {
			t.Fatalf("%s: docker exec cat /tmp/count after restore %s: %q (the checkpoint was at %d)", name, cp, out, before)
		}
	}
	if got := e.checkpoints(t, name); !slices.Equal(got, []string{"cycle1", "cycle2"}) {
		t.Fatalf("docker checkpoint ls %s: %v; want cycle1, cycle2", name, got)
	}
	e.must(t, "checkpoint", "rm", name, "cycle1")
	if got := e.checkpoints(t, name); !slices.Equal(got, []string{"cycle2"}) {
		t.Fatalf("docker checkpoint ls %s after rm cycle1: %v; want cycle2", name, got)
	}
	e.must(t, "stop", "--time", "1", name)
	if e.running(t, name) {
		t.Fatalf("%s runs after docker stop", name)
	}
	e.must(t, "rm", name)
	e.gone(t, name)
}

// --network none: Docker still wires the (loopback-only) namespace.
func testNetworkNone(t *testing.T, e *engine, rt runtimeCase) {
	name := rt.name + "-none"
	e.runCounter(t, name, "--runtime", rt.name, "--network", "none")
	before := e.checkpointExit(t, name, "none1")
	if !rt.restore(t, e, name, "none1", false) {
		afterPeerFailure(t, e, name)
		return
	}
	assertContinuous(t, name, e.waitCounter(t, name, before+5))
	if out := e.must(t, "exec", name, "ip", "addr", "show", "lo"); !strings.Contains(out, "127.0.0.1") || !strings.Contains(out, "UP") {
		t.Fatalf("%s: loopback after restore:\n%s", name, out)
	}
	e.must(t, "rm", "-f", name)
	e.gone(t, name)
}

// `docker start --checkpoint` right after `docker checkpoint create`,
// before containerd's garbage collection.
func testRightAfterCheckpoint(t *testing.T, e *engine, rt runtimeCase) {
	name := rt.name + "-quick"
	e.runCounter(t, name, "--runtime", rt.name)
	before := e.checkpointExit(t, name, "quick1")
	if !rt.restore(t, e, name, "quick1", true) {
		// Later, once collected, the same start works (or fails as the
		// peer does on this version anyway).
		if rt.restore(t, e, name, "quick1", false) {
			assertContinuous(t, name, e.waitCounter(t, name, before+5))
			e.must(t, "rm", "-f", name)
			return
		}
		afterPeerFailure(t, e, name)
		return
	}
	assertContinuous(t, name, e.waitCounter(t, name, before+5))
	e.must(t, "rm", "-f", name)
	e.gone(t, name)
}

// A corrupted checkpoint: the start fails with CRIU's reason, and the
// container can be removed.
func testCorruptedCheckpoint(t *testing.T, e *engine, rt runtimeCase) {
	name := rt.name + "-corrupt"
	e.runCounter(t, name, "--runtime", rt.name)
	e.checkpointExit(t, name, "bad1")
	cores, err := filepath.Glob(filepath.Join(e.checkpointDir(t, name, "bad1"), "core-*.img"))
	if err != nil || len(cores) == 0 {
		t.Fatalf("no core-*.img in the checkpoint: %v", err)
	}
	for _, c := range cores {
		if err := os.WriteFile(c, bytes.Repeat([]byte("garbage!"), 64), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if rt.peer {
		e.forceGC(t)
	}
	out, err := e.docker("start", "--checkpoint", "bad1", name)
	if err == nil {
		t.Fatalf("%s: docker start --checkpoint of a corrupted checkpoint succeeded", rt.name)
	}
	const reason = "Head magic doesn't match"
	if rt.peer {
		if want := peerCorruptFailure(e.version); !strings.Contains(out, want) || strings.Contains(out, reason) {
			t.Errorf("PEER CHANGED: runc shim: a corrupted checkpoint on Docker %s used to fail with %q and no CRIU reason; now:\n%s", e.version, want, out)
		} else {
			t.Logf("runc shim: start --checkpoint of a corrupted checkpoint on Docker %s fails without CRIU's reason: %s", e.version, out)
		}
		afterPeerFailure(t, e, name)
		return
	}
	if !strings.Contains(out, reason) {
		t.Fatalf("ckpt: the failed start does not show CRIU's reason (%q):\n%s", reason, out)
	}
	t.Logf("ckpt: start --checkpoint of a corrupted checkpoint fails with: %s", out)
	if e.running(t, name) {
		t.Fatalf("%s runs after a failed restore", name)
	}
	e.must(t, "rm", "-f", name)
	e.gone(t, name)
}

// assertNetworkFiles checks that the restored container reads the
// /etc/hosts, /etc/resolv.conf and /etc/hostname Docker wrote for it
// (Docker writes them while it wires the network, between task Create
// and Start), and that /etc/hosts names its IP.
func (e *engine) assertNetworkFiles(t *testing.T, name, ip string) {
	t.Helper()
	for file, field := range map[string]string{
		"/etc/hosts": "{{.HostsPath}}", "/etc/resolv.conf": "{{.ResolvConfPath}}", "/etc/hostname": "{{.HostnamePath}}",
	} {
		host, err := os.ReadFile(e.inspect(t, name, field))
		if err != nil {
			t.Fatalf("%s: Docker's %s: %v", name, file, err)
		}
		if got := e.must(t, "exec", name, "cat", file); strings.TrimSpace(got) != strings.TrimSpace(string(host)) {
			t.Fatalf("%s: %s inside the restored container:\n%s\nDocker's:\n%s", name, file, got, host)
		}
	}
	if hosts := e.must(t, "exec", name, "cat", "/etc/hosts"); !strings.Contains(hosts, ip) {
		t.Fatalf("%s: /etc/hosts lacks %s:\n%s", name, ip, hosts)
	}
}

// readCount reads the counter's /tmp/count with docker exec. The shell
// truncates the file before each write, so a read can come in between and
// find it empty: that read is tried again (a few times, 50 ms apart).
func (e *engine) readCount(t *testing.T, name string) (int, string) {
	t.Helper()
	var out string
	for try := 0; try < 5; try++ {
		out = e.must(t, "exec", name, "cat", "/tmp/count")
		if v, err := strconv.Atoi(strings.TrimSpace(out)); err == nil {
			return v, out
		}
		time.Sleep(50 * time.Millisecond)
	}
	return -1, out
}
