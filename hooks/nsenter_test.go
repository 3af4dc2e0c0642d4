package hooks

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func requireRoot(t *testing.T) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		missing = append(missing, "unshare (util-linux)")
	}
	if len(missing) == 0 {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("CI: needs %s", strings.Join(missing, ", "))
	}
	t.Skipf("SKIPPED, NOT TESTED: needs %s", strings.Join(missing, ", "))
}

// fakeContainer starts a process in new mount, pid, uts, ipc, net, cgroup
// and time namespaces (boot clock 1000 s ahead). In its mount namespace a
// tmpfs covers hookDir and holds a different hook.sh than the host's.
// It returns the process's host pid.
func fakeContainer(t *testing.T, hookDir, out string) int {
	t.Helper()
	inner := fmt.Sprintf(`hostname fake-ctr
mount -t tmpfs tmpfs %[1]s
printf '#!/bin/sh\necho container-copy > %[2]s/which\n' > %[1]s/hook.sh
chmod +x %[1]s/hook.sh
touch %[2]s/ready
exec sleep 60`, hookDir, out)
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--mount-proc",
		"--kill-child", "--uts", "--ipc", "--net", "--cgroup", "--time", "--boottime", "1000", "sh", "-c", inner)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(out, "ready")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the fake container did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// unshare --fork's child is pid 1 of the new pid namespace.
	children, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(children)))
	if err != nil {
		t.Fatalf("children of unshare: %q", children)
	}
	return pid
}

// TestInContainer runs a createContainer and a startContainer hook in a
// fake container: both see its namespaces, its hostname, its clocks and
// the init's pid as the container sees it; the createContainer hook is the
// host's file, the startContainer hook the container's.
func TestInContainer(t *testing.T) {
	requireRoot(t)
	hookDir, out := t.TempDir(), t.TempDir()
	host := script(t, hookDir, "hook.sh", `out=$1
echo host-copy > $out/which
cat > $out/state
hostname > $out/hostname
echo $$ > $out/pid
for ns in mnt pid net uts ipc cgroup; do echo "$ns $(readlink /proc/self/ns/$ns)"; done > $out/ns
cut -d' ' -f1 /proc/uptime > $out/uptime`)
	pid := fakeContainer(t, hookDir, out)

	r := &HookRunner{}
	hook := specs.Hook{Path: host, Args: []string{"hook", out}}
	if err := r.RunPhase(context.Background(), CreateContainer, []specs.Hook{hook}, specs.State{ID: "fake", Pid: pid}, ContainerNamespace, pid); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(readFile(t, filepath.Join(out, "which"))); got != "host-copy" {
		t.Fatalf("createContainer ran %q, want the host's hook", got)
	}
	if got := strings.TrimSpace(readFile(t, filepath.Join(out, "hostname"))); got != "fake-ctr" {
		t.Errorf("hostname %q: not in the container's uts namespace", got)
	}
	for _, l := range strings.Split(strings.TrimSpace(readFile(t, filepath.Join(out, "ns"))), "\n") {
		name, link, _ := strings.Cut(l, " ")
		want, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, name))
		if err != nil {
			t.Fatal(err)
		}
		if link != want {
			t.Errorf("%s namespace %s, want the container's %s", name, link, want)
		}
	}
	if hp, _ := strconv.Atoi(strings.TrimSpace(readFile(t, filepath.Join(out, "pid")))); hp <= 1 || hp > 100 {
		t.Errorf("the hook's pid %d is not one of the container's pid namespace", hp)
	}
	var st specs.State
	if err := json.Unmarshal([]byte(readFile(t, filepath.Join(out, "state"))), &st); err != nil {
		t.Fatal(err)
	}
	if st.Pid != 1 || st.ID != "fake" {
		t.Errorf("state %+v: want the init's pid as the container sees it (1)", st)
	}
	up, _ := strconv.ParseFloat(strings.TrimSpace(readFile(t, filepath.Join(out, "uptime"))), 64)
	ours, _ := strconv.ParseFloat(strings.Fields(readFile(t, "/proc/uptime"))[0], 64)
	if d := up - ours; d < 990 || d > 1010 {
		t.Errorf("the hook's boot clock is %.0fs from ours, want the container's +1000s", d)
	}

	// A later hook in ckpt's own time (a process sharing our namespaces)
	// reads the host's clocks again.
	same := exec.Command("sleep", "30")
	if err := same.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { same.Process.Kill(); same.Wait() }()
	if err := r.RunPhase(context.Background(), CreateContainer, []specs.Hook{hook}, specs.State{}, ContainerNamespace, same.Process.Pid); err != nil {
		t.Fatal(err)
	}
	up, _ = strconv.ParseFloat(strings.TrimSpace(readFile(t, filepath.Join(out, "uptime"))), 64)
	ours, _ = strconv.ParseFloat(strings.Fields(readFile(t, "/proc/uptime"))[0], 64)
	if d := up - ours; d < -10 || d > 10 {
		t.Errorf("a hook in the host's time reads a boot clock %.0fs from ours", d)
	}

	// startContainer resolves its path in the container.
	if err := r.RunPhase(context.Background(), StartContainer, []specs.Hook{hook}, specs.State{ID: "fake", Pid: pid}, ContainerNamespace, pid); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(readFile(t, filepath.Join(out, "which"))); got != "container-copy" {
		t.Fatalf("startContainer ran %q, want the container's hook", got)
	}
}

// TestInContainerGone: a container process that is gone fails the hook
// with an error, and the runner goes on working.
func TestInContainerGone(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	gone := cmd.Process.Pid
	r := &HookRunner{}
	err := r.RunPhase(context.Background(), CreateContainer, []specs.Hook{{Path: "/bin/true"}}, specs.State{}, ContainerNamespace, gone)
	if err == nil || !strings.Contains(err.Error(), "createContainer hook 0 (/bin/true)") {
		t.Fatalf("got %v", err)
	}
	// A process in our own namespaces: nothing to enter, the hook still
	// runs through its descriptor (and needs no privilege).
	same := exec.Command("sleep", "30")
	if err := same.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { same.Process.Kill(); same.Wait() }()
	if err := r.RunPhase(context.Background(), CreateContainer, []specs.Hook{{Path: "/bin/true"}}, specs.State{}, ContainerNamespace, same.Process.Pid); err != nil {
		t.Fatal(err)
	}
}

// TestMainThreadKeepsNamespaces: whatever thread the hooks start from, the
// process's main thread (/proc/self) stays in ckpt's namespaces.
func TestMainThreadKeepsNamespaces(t *testing.T) {
	requireRoot(t)
	hookDir, out := t.TempDir(), t.TempDir()
	pid := fakeContainer(t, hookDir, out)
	before, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		t.Fatal(err)
	}
	r := &HookRunner{}
	for i := 0; i < 20; i++ {
		if err := r.RunPhase(context.Background(), StartContainer, []specs.Hook{{Path: "/bin/true"}}, specs.State{}, ContainerNamespace, pid); err != nil {
			t.Fatal(err)
		}
		runtime.Gosched()
	}
	for _, ns := range []string{"mnt", "pid", "net", "uts", "ipc", "cgroup", "time"} {
		ours, _ := os.Readlink("/proc/thread-self/ns/" + ns)
		main, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", os.Getpid(), ns))
		if ours != main {
			t.Errorf("main thread's %s namespace is %s, this thread's %s", ns, main, ours)
		}
	}
	if after, _ := os.Readlink("/proc/self/ns/mnt"); after != before {
		t.Errorf("/proc/self/ns/mnt changed from %s to %s", before, after)
	}
}

// TestLaunchesKeepThreads: the kernel kills a child with a parent-death
// signal when the thread that forked it ends (criu is started so). Hooks
// in containers must not end threads: children forked from any thread
// before survive any number of hooks.
func TestLaunchesKeepThreads(t *testing.T) {
	var children []*exec.Cmd
	for i := 0; i < 16; i++ {
		done := make(chan *exec.Cmd)
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			c := exec.Command("sleep", "60")
			c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			if err := c.Start(); err != nil {
				t.Error(err)
				c = nil
			}
			done <- c
		}()
		if c := <-done; c != nil {
			children = append(children, c)
		}
	}
	t.Cleanup(func() {
		for _, c := range children {
			c.Process.Kill()
			c.Wait()
		}
	})
	target := children[0].Process.Pid
	r := &HookRunner{}
	for i := 0; i < 40; i++ {
		if err := r.RunPhase(context.Background(), CreateContainer, []specs.Hook{{Path: "/bin/true"}}, specs.State{}, ContainerNamespace, target); err != nil {
			t.Fatal(err)
		}
		runtime.Gosched()
	}
	for _, c := range children {
		if err := c.Process.Signal(syscall.Signal(0)); err != nil {
			t.Fatalf("child %d died: %v", c.Process.Pid, err)
		}
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.Process.Pid))
		if i := strings.LastIndexByte(string(b), ')'); i < 0 || strings.Fields(string(b[i+1:]))[0] == "Z" {
			t.Fatalf("child %d died (its forking thread ended)", c.Process.Pid)
		}
	}
}
