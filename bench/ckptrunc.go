package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/ckpt-dev/ckpt/runtime/container"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// ckptRunc is ckpt's engine (runtime/container) on a container plain runc
// runs: no containerd, no shim, the CRIU capabilities probed once per
// bench process.
type ckptRunc struct {
	runc   string
	rootfs string
	root   string // runc --root
	spec   []byte // `runc spec`'s config.json
	logger *logrus.Entry
	seq    int
}

func newCkptRunc(scratch, rootfs string) (*ckptRunc, error) {
	runcPath, err := exec.LookPath("runc")
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(scratch, "spec-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	if out, err := exec.Command(runcPath, "spec", "--bundle", tmp).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("runc spec: %w: %s", err, out)
	}
	spec, err := os.ReadFile(filepath.Join(tmp, "config.json"))
	if err != nil {
		return nil, err
	}
	quiet := logrus.New()
	quiet.SetLevel(logrus.WarnLevel)
	return &ckptRunc{
		runc: runcPath, rootfs: rootfs, root: filepath.Join(scratch, "runc-root"), spec: spec,
		logger: logrus.NewEntry(quiet).WithField("target", targetCkptRunc),
	}, nil
}

func (r *ckptRunc) Name() string { return targetCkptRunc }

// Supports leaves out terminals: runc would need a console socket, and
// the terminal path is measured through the shims.
func (r *ckptRunc) Supports(w Workload) bool { return !w.Terminal }

func (r *ckptRunc) Run(ctx context.Context, w Workload, dir string) (s Sample, retErr error) {
	ctx, cancel := context.WithTimeout(log.WithLogger(ctx, r.logger), 5*time.Minute)
	defer cancel()
	r.seq++
	id := fmt.Sprintf("bench-%d-%d", os.Getpid(), r.seq)
	bundle := filepath.Join(dir, "bundle")
	if err := r.writeBundle(bundle, w); err != nil {
		return s, err
	}
	outPath := filepath.Join(dir, "out.log")
	out, err := os.OpenFile(outPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return s, err
	}
	defer out.Close()
	defer r.destroy(id)
	cmd := exec.CommandContext(ctx, r.runc, "--root", r.root, "run", "-d", "--bundle", bundle, id)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		return s, fmt.Errorf("runc run: %w: %s", err, lastBytes(readFile(outPath), 300))
	}
	if err := waitLine(ctx, outPath, w.Ready, 60*time.Second); err != nil {
		return s, fmt.Errorf("workload not ready: %w", err)
	}

	// CRIU writes its statistics into the work dir, next to its log.
	images, work, restoreWork := filepath.Join(dir, "images"), filepath.Join(dir, "work"), filepath.Join(dir, "work-restore")
	t0 := time.Now()
	_, err = container.Checkpoint(ctx, container.CheckpointOptions{
		Root: r.root, ID: id, ImagePath: images, WorkPath: work, Runc: r.runc, EmptyNetNS: *emptyNetNS,
	})
	s.Checkpoint = time.Since(t0)
	if err != nil {
		return s, fmt.Errorf("checkpoint: %w", err)
	}
	s.ImageBytes = dirSize(images)
	s.Dump, _ = readStats(work)
	s.Ckpt = ckptTimings(images)

	mark := countLines(outPath)
	t0 = time.Now()
	pid, err := container.Restore(ctx, container.RestoreOptions{
		Root: r.root, ID: id, Bundle: bundle, ImagePath: images, WorkPath: restoreWork,
		Stdio: [3]*os.File{nil, out, out}, Runc: r.runc,
	})
	s.Restore = time.Since(t0)
	if err != nil {
		return s, fmt.Errorf("restore: %w", err)
	}
	switch {
	case w.MemMiB > 0:
		if err := waitFor(ctx, 10*time.Second, func() bool { return countLines(outPath) > mark }); err != nil {
			return s, fmt.Errorf("restored workload does not run: %w", err)
		}
	case w.Procs > 0:
		if n := pidNSMembers(pid); n < w.Procs {
			return s, fmt.Errorf("restored tree has %d processes, want %d", n, w.Procs)
		}
	default:
		if !alive(pid) {
			return s, fmt.Errorf("restored init %d is not running", pid)
		}
	}
	_, s.Restored = readStats(restoreWork)
	return s, nil
}

// writeBundle writes config.json for w, its root the shared read-only
// rootfs.
func (r *ckptRunc) writeBundle(bundle string, w Workload) error {
	var spec specs.Spec
	if err := json.Unmarshal(r.spec, &spec); err != nil {
		return err
	}
	spec.Root = &specs.Root{Path: r.rootfs, Readonly: true}
	spec.Process.Terminal = false
	spec.Process.Args = w.Args
	data, err := json.Marshal(&spec)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(bundle, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(bundle, "config.json"), data, 0o644)
}

// destroy kills and deletes the container and reaps its init, which is
// this process's child after a restore.
func (r *ckptRunc) destroy(id string) {
	pid := 0
	if out, err := exec.Command(r.runc, "--root", r.root, "state", id).Output(); err == nil {
		var st struct {
			Pid int `json:"pid"`
		}
		if json.Unmarshal(out, &st) == nil {
			pid = st.Pid
		}
	}
	exec.Command(r.runc, "--root", r.root, "kill", id, "KILL").Run()
	if pid > 0 {
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			var ws unix.WaitStatus
			got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
			if got == pid || (err != nil && !alive(pid)) {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	exec.Command(r.runc, "--root", r.root, "delete", "--force", id).Run()
}

// pidNSMembers counts the processes in pid's pid namespace.
func pidNSMembers(pid int) int {
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
	if err != nil {
		return 0
	}
	entries, _ := os.ReadDir("/proc")
	n := 0
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		if l, err := os.Readlink(filepath.Join("/proc", e.Name(), "ns", "pid")); err == nil && l == ns {
			n++
		}
	}
	return n
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == ')' {
			return i+2 < len(b) && b[i+2] != 'Z'
		}
	}
	return false
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}
