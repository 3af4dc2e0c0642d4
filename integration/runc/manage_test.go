package runc_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ckpt-dev/ckpt/runtime/container"
)

// TestRuncManagesRestored: after ckpt's restore, runc treats the container
// as its own: ps lists the restored tree, pause stops the counter and
// resume lets it go on, update changes the cgroup.
func TestRuncManagesRestored(t *testing.T) {
	c := newCtr(t, nil)
	c.start()
	for cycle := 1; cycle <= 2; cycle++ {
		images := c.checkpoint(container.CheckpointOptions{})
		before := c.last()
		c.restore(images, c.id)
		c.waitCount(before + 3)
	}
	c.assertContinuous()
	// A process the restored init forks is part of its tree.
	if out, err := c.exec("sh", "-c", "echo exec-after-restore"); err != nil || !strings.Contains(out, "exec-after-restore") {
		t.Fatalf("runc exec into the restored container: %v: %s", err, out)
	}

	// runc ps: the init, the exec'd shell, and whatever they are running.
	var pids []int
	if err := json.Unmarshal([]byte(run(t, "runc", "--root", c.root, "ps", "--format", "json", c.id)), &pids); err != nil {
		t.Fatal(err)
	}
	if _, initPid := c.state(c.id); !containsInt(pids, initPid) {
		t.Fatalf("runc ps = %v: the restored init %d is missing", pids, initPid)
	}

	run(t, "runc", "--root", c.root, "pause", c.id)
	if st, _ := c.state(c.id); st != "paused" {
		t.Fatalf("runc pause of the restored container: state %s", st)
	}
	frozen := c.last()
	time.Sleep(200 * time.Millisecond)
	if c.last() != frozen {
		t.Fatalf("the paused container still counts (%d -> %d)", frozen, c.last())
	}
	run(t, "runc", "--root", c.root, "resume", c.id)
	c.waitCount(frozen + 3)

	run(t, "runc", "--root", c.root, "update", "--pids-limit", "77", c.id)
	if got := cgroupFile(t, c, "pids", "pids.max"); got != "77" {
		t.Fatalf("runc update --pids-limit 77: the restored container's pids.max is %q", got)
	}
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func lastIn(p string) int {
	n := countsIn(p)
	if len(n) == 0 {
		return 0
	}
	return n[len(n)-1]
}

// cgroupFile reads a file of the container's cgroup in one controller,
// from the paths runc recorded (v1), or the unified dir (v2).
func cgroupFile(t *testing.T, c *ctr, controller, file string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(c.root, c.id, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		CgroupPaths map[string]string `json:"cgroup_paths"`
	}
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatal(err)
	}
	dir := st.CgroupPaths[controller]
	if dir == "" {
		dir = st.CgroupPaths[""]
	}
	b, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		t.Fatalf("cgroup file %s of the restored container: %v", file, err)
	}
	return strings.TrimSpace(string(b))
}

// TestCheckpointRefusesExecProcesses: a process started with runc exec is
// not in the init's process tree (runc's exit hands it to a reaper outside
// the container), so CRIU would not checkpoint it and it would be lost.
// ckpt refuses the checkpoint, names the process, and the container runs
// on untouched; once the exec'd process is gone the checkpoint works.
func TestCheckpointRefusesExecProcesses(t *testing.T) {
	c := newCtr(t, nil)
	c.start()
	execOut := filepath.Join(c.bundle, "rootfs", "tmp", "exec.log")
	run(t, "runc", "--root", c.root, "exec", "-d", "--pid-file", filepath.Join(c.bundle, "exec.pid"), c.id, "sh", "-c",
		`exec </dev/null >/dev/null 2>&1; i=0; while :; do i=$((i+1)); echo $i >>/tmp/exec.log; usleep 20000; done`)
	waitFor(t, "the exec'd counter", func() bool { return lastIn(execOut) >= 3 })
	execPid, err := strconv.Atoi(strings.TrimSpace(readFile(filepath.Join(c.bundle, "exec.pid"))))
	if err != nil {
		t.Fatal(err)
	}

	images := filepath.Join(t.TempDir(), "images")
	_, err = container.Checkpoint(ctx(t), container.CheckpointOptions{Root: c.root, ID: c.id, ImagePath: images})
	if err == nil {
		t.Fatal("checkpoint with an exec'd process running succeeded: the exec'd process is lost")
	}
	msg := err.Error()
	if !strings.Contains(msg, "outside its init's process tree") || !strings.Contains(msg, fmt.Sprintf("pid %d ", execPid)) {
		t.Fatalf("the error does not name the exec'd process %d: %v", execPid, err)
	}
	if st, _ := c.state(c.id); st != "running" {
		t.Fatalf("after the refused checkpoint the container is %q", st)
	}
	if _, err := os.Stat(filepath.Join(images, "ckpt.json")); err == nil {
		t.Fatal("a refused checkpoint left a ckpt.json")
	}
	n, e := c.last(), lastIn(execOut)
	c.waitCount(n + 3)
	waitFor(t, "the exec'd counter to go on", func() bool { return lastIn(execOut) >= e+3 })

	syscall.Kill(execPid, syscall.SIGKILL)
	waitFor(t, "the exec'd process to go", func() bool { return !alive(execPid) })
	images = c.checkpoint(container.CheckpointOptions{})
	before := c.last()
	c.restore(images, c.id)
	c.waitCount(before + 3)
	c.assertContinuous()
}

// TestCheckpointRecordsStats: CRIU writes stats-dump to the work dir when
// there is one (containerd always passes one); ckpt.json carries them
// either way.
func TestCheckpointRecordsStats(t *testing.T) {
	for _, work := range []bool{false, true} {
		t.Run(fmt.Sprintf("work dir %v", work), func(t *testing.T) {
			c := newCtr(t, nil)
			c.start()
			opts := container.CheckpointOptions{Root: c.root, ID: c.id, ImagePath: filepath.Join(t.TempDir(), "images"), LeaveRunning: true}
			if work {
				opts.WorkPath = filepath.Join(t.TempDir(), "work")
			}
			md, err := container.Checkpoint(ctx(t), opts)
			if err != nil {
				t.Fatal(err)
			}
			if md.Stats == nil || md.Stats.PagesWritten == 0 || md.Stats.FrozenTimeUs == 0 {
				t.Fatalf("ckpt.json lacks CRIU's dump statistics: %+v", md.Stats)
			}
		})
	}
}
