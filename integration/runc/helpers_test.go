// Package runc_test checkpoints and restores containers run by the real
// runc, with the real CRIU, through ckpt's runtime/container package (and
// its CLI), and checks that runc manages the restored containers.
package runc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ckpt-dev/ckpt/integration/internal/testutil"
	"github.com/ckpt-dev/ckpt/runtime/container"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

func requireAll(t *testing.T) {
	t.Helper()
	testutil.Require(t, "root", "criu", "runc", testutil.BusyboxPath)
}

// counterScript prints 1, 2, 3, ... every 20ms. The count lives in the
// shell's memory, so a restored shell continues where it was. It waits
// with read's timeout on a FIFO rather than forking sleep.
const counterScript = `mkfifo /tmp/tick 2>/dev/null; exec 3<>/tmp/tick; i=0; while :; do i=$((i+1)); echo $i; read -t 0.02 -u 3 x; done`

var seq atomic.Int64

// ctr is one test container: a bundle, a runc root and an id.
type ctr struct {
	t      *testing.T
	bundle string
	root   string
	id     string
	out    string // the counter's output file
}

// newCtr builds a busybox bundle whose config.json comes from `runc spec`,
// edited by edit.
func newCtr(t *testing.T, edit func(*specs.Spec)) *ctr {
	t.Helper()
	requireAll(t)
	dir := t.TempDir()
	c := &ctr{
		t: t, bundle: filepath.Join(dir, "bundle"), root: filepath.Join(dir, "runc-root"),
		id: fmt.Sprintf("ckpt-it-%d-%d", os.Getpid(), seq.Add(1)),
	}
	c.out = filepath.Join(c.bundle, "out.log")
	testutil.Rootfs(t, filepath.Join(c.bundle, "rootfs"))
	run(t, "runc", "spec", "--bundle", c.bundle)
	c.editSpec(func(s *specs.Spec) {
		s.Process.Terminal = false
		s.Process.Args = []string{"sh", "-c", counterScript}
		s.Root.Readonly = false
		if edit != nil {
			edit(s)
		}
	})
	t.Cleanup(func() { c.destroy(c.id) })
	return c
}

func (c *ctr) editSpec(edit func(*specs.Spec)) {
	c.t.Helper()
	p := filepath.Join(c.bundle, "config.json")
	data, err := os.ReadFile(p)
	if err != nil {
		c.t.Fatal(err)
	}
	var s specs.Spec
	if err := json.Unmarshal(data, &s); err != nil {
		c.t.Fatal(err)
	}
	edit(&s)
	if data, err = json.MarshalIndent(&s, "", "  "); err != nil {
		c.t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		c.t.Fatal(err)
	}
}

// openOut opens the counter's output file for appending, as a container's
// stdout and stderr.
func (c *ctr) openOut() *os.File { return openAppend(c.t, c.out) }

func openAppend(t *testing.T, p string) *os.File {
	t.Helper()
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// start runs the container detached with stdout and stderr on out.log and
// waits until it counts.
func (c *ctr) start() {
	c.t.Helper()
	f := c.openOut()
	cmd := exec.Command("runc", "--root", c.root, "run", "-d", "--bundle", c.bundle, c.id)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Run(); err != nil {
		c.t.Fatalf("runc run: %v\n%s", err, readFile(c.out))
	}
	c.waitCount(c.last() + 3)
}

func (c *ctr) checkpoint(opts container.CheckpointOptions) string {
	c.t.Helper()
	if opts.ImagePath == "" {
		opts.ImagePath = filepath.Join(c.t.TempDir(), "images")
	}
	opts.Root, opts.ID = c.root, c.id
	if _, err := container.Checkpoint(ctx(c.t), opts); err != nil {
		c.t.Fatalf("checkpoint: %v", err)
	}
	return opts.ImagePath
}

// restore restores images as container id with stdout on out.log.
func (c *ctr) restore(images, id string) int {
	c.t.Helper()
	pid, err := container.Restore(ctx(c.t), c.restoreOpts(images, id))
	if err != nil {
		c.t.Fatalf("restore: %v", err)
	}
	c.id = id
	return pid
}

func (c *ctr) restoreOpts(images, id string) container.RestoreOptions {
	f := openAppend(c.t, c.out)
	return container.RestoreOptions{
		Root: c.root, ID: id, Bundle: c.bundle, ImagePath: images,
		WorkPath: filepath.Join(c.t.TempDir(), "work"), Stdio: [3]*os.File{nil, f, f},
	}
}

// state is `runc state`.
func (c *ctr) state(id string) (status string, pid int) {
	c.t.Helper()
	out, err := exec.Command("runc", "--root", c.root, "state", id).CombinedOutput()
	if err != nil {
		return "", 0
	}
	var st struct {
		Status string `json:"status"`
		Pid    int    `json:"pid"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		c.t.Fatalf("runc state: %v: %s", err, out)
	}
	return st.Status, st.Pid
}

// destroy kills and deletes id through runc and reaps its init, which is
// this process's child after a restore (rst_sibling).
func (c *ctr) destroy(id string) {
	_, pid := c.state(id)
	exec.Command("runc", "--root", c.root, "kill", id, "KILL").Run()
	if pid > 0 {
		reap(pid)
	}
	exec.Command("runc", "--root", c.root, "delete", "--force", id).Run()
}

// counts returns the numbers the counter printed.
func (c *ctr) counts() []int { return countsIn(c.out) }

func countsIn(p string) []int {
	var n []int
	for _, l := range strings.Split(strings.TrimSpace(readFile(p)), "\n") {
		// A terminal ends lines with \r\n.
		if v, err := strconv.Atoi(strings.TrimSpace(l)); err == nil {
			n = append(n, v)
		}
	}
	return n
}

func (c *ctr) last() int {
	n := c.counts()
	if len(n) == 0 {
		return 0
	}
	return n[len(n)-1]
}

func (c *ctr) waitCount(n int) {
	c.t.Helper()
	waitFor(c.t, fmt.Sprintf("the counter to reach %d (output: %q)", n, tail(readFile(c.out))), func() bool { return c.last() >= n })
}

// assertContinuous checks the counter never restarted: each value is the
// previous one plus one.
func (c *ctr) assertContinuous() {
	c.t.Helper()
	n := c.counts()
	for i := 1; i < len(n); i++ {
		if n[i] != n[i-1]+1 {
			c.t.Fatalf("counter broken at line %d: %d after %d (it restarted or lost state)", i+1, n[i], n[i-1])
		}
	}
}

// assertGone checks that nothing of container id is left: no runc state,
// no mounts under the test's dirs, no cgroup (those given, and the default
// ones of the id).
func (c *ctr) assertGone(id string, cgroupPaths []string) {
	c.t.Helper()
	cgroupPaths = append(cgroupPaths, defaultCgroupDirs(c.t, id)...)
	if _, err := os.Stat(filepath.Join(c.root, id)); !os.IsNotExist(err) {
		c.t.Errorf("runc state dir of %s left behind (%v)", id, err)
	}
	if wd, err := container.WorkDir(c.root, id); err != nil {
		c.t.Error(err)
	} else if _, err := os.Stat(wd); !os.IsNotExist(err) {
		c.t.Errorf("restore work dir of %s left behind (%v)", id, err)
	}
	out, _ := exec.Command("runc", "--root", c.root, "list", "-q").Output()
	if strings.Contains(string(out), id) {
		c.t.Errorf("runc list still shows %s", id)
	}
	mi := readFile("/proc/self/mountinfo")
	wd, _ := container.WorkDir(c.root, id)
	for _, l := range strings.Split(mi, "\n") {
		// Only this test's: other tests (containerd's) may restore meanwhile.
		if strings.Contains(l, c.root) || strings.Contains(l, wd) {
			c.t.Errorf("mount left behind: %s", l)
		}
	}
	for _, p := range cgroupPaths {
		if _, err := os.Stat(p); err == nil {
			c.t.Errorf("cgroup %s left behind", p)
		}
	}
}

// cgroupPaths returns the cgroup dirs runc recorded for id.
func (c *ctr) cgroupPaths(id string) []string {
	c.t.Helper()
	data, err := os.ReadFile(filepath.Join(c.root, id, "state.json"))
	if err != nil {
		c.t.Fatal(err)
	}
	var st struct {
		CgroupPaths map[string]string `json:"cgroup_paths"`
	}
	if err := json.Unmarshal(data, &st); err != nil {
		c.t.Fatal(err)
	}
	var out []string
	for _, p := range st.CgroupPaths {
		out = append(out, p)
	}
	return out
}

// defaultCgroupDirs are the cgroup dirs runc makes for id without a
// cgroupsPath: <hierarchy>/<our own cgroup>/<id>.
func defaultCgroupDirs(t testing.TB, id string) []string {
	t.Helper()
	cgs, err := testutil.CgroupsOf("self")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, cg := range cgs {
		out = append(out, filepath.Join(cg.Dir, cg.Path, id))
	}
	return out
}

func (c *ctr) exec(args ...string) (string, error) {
	out, err := command(c.t, "runc", append([]string{"--root", c.root, "exec", c.id}, args...)...).CombinedOutput()
	return string(out), err
}

// command is exec.Command bounded in time, also when a child it left
// behind keeps its output pipe open: a hung test blocks CI.
func command(t *testing.T, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx(t), name, args...)
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := command(t, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

func tail(s string) string {
	if len(s) > 200 {
		return "..." + s[len(s)-200:]
	}
	return s
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	return len(f) > 0 && f[0] != "Z"
}

// reap waits for pid if it is our child (a restored init); otherwise it
// waits for it to disappear.
func reap(pid int) {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		var ws unix.WaitStatus
		got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		if got == pid || (err != nil && !alive(pid)) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}
