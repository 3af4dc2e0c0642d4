package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ckpt-dev/ckpt/runtime/container"
	"github.com/containerd/log"
)

// The lazy restore comparison (issue 18): one memhog container restored
// in full by ckpt, lazily by ckpt from the same kind of images, and lazily
// by runc (runc checkpoint; criu lazy-pages -D; runc restore --lazy-pages).
// "running" is when the restore call returned with the container running,
// "pages in" when the lazy-pages daemon exited (every page delivered).
var (
	lazyMiB  = flag.Int("lazy-mib", 1024, "memory of the lazy restore comparison, MiB (0: skip it)")
	lazyOnly = flag.Bool("lazy-only", false, "run only the lazy restore comparison")
	lazyReps = flag.Int("lazy-reps", 5, "repetitions of each lazy restore mode")
)

// runLazy runs the comparison, prints it and writes it to out/lazy.md.
func runLazy(ctx context.Context, scratch, memhog, out string) error {
	if *lazyMiB <= 0 {
		return nil
	}
	rootfs := filepath.Join(scratch, "rootfs")
	if _, err := os.Stat(rootfs); err != nil {
		if err := buildRootfs(rootfs, memhog); err != nil {
			return err
		}
	}
	table, err := benchLazy(ctx, scratch, rootfs, *lazyMiB, *lazyReps)
	if err != nil {
		return err
	}
	fmt.Print(table)
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(out, "lazy.md"), []byte(table), 0o644)
}

type lazyMode struct {
	name string
	run  func(ctx context.Context, r *ckptRunc, id, bundle, dir string) (running, pagesIn time.Duration, err error)
}

var lazyModes = []lazyMode{
	{"ckpt full restore", ckptRestoreMode(false)},
	{"ckpt lazy restore", ckptRestoreMode(true)},
	{"runc lazy restore", runcLazyMode},
}

// lazyResult is one mode's medians.
type lazyResult struct {
	Mode             string
	Running, PagesIn time.Duration
	N                int
	Err              string
}

// benchLazy runs reps repetitions of each mode, interleaved, and returns
// the medians as a markdown table.
func benchLazy(ctx context.Context, scratch, rootfs string, mib, reps int) (string, error) {
	r, err := newCkptRunc(scratch, rootfs)
	if err != nil {
		return "", err
	}
	results := make([]lazyResult, len(lazyModes))
	runs := make([][2][]time.Duration, len(lazyModes))
	for rep := 0; rep < reps; rep++ {
		for i, m := range lazyModes {
			results[i].Mode = m.name
			running, in, err := lazyOnce(ctx, r, m, mib)
			if err != nil {
				results[i].Err = err.Error()
				continue
			}
			runs[i][0], runs[i][1] = append(runs[i][0], running), append(runs[i][1], in)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n### Lazy restore, %d MiB (medians)\n\n| mode | running after | all pages in | runs |\n|---|---|---|---|\n", mib)
	for i := range results {
		res := &results[i]
		res.N = len(runs[i][0])
		if res.N > 0 {
			res.Running, res.PagesIn = medianDur(runs[i][0]), medianDur(runs[i][1])
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %d |", res.Mode, fmtMs(res.Running), fmtMs(res.PagesIn), res.N)
		if res.Err != "" {
			fmt.Fprintf(&b, " last error: %s", lastBytes(res.Err, 200))
		}
		b.WriteString("\n")
	}
	return b.String(), nil
}

func fmtMs(d time.Duration) string {
	return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
}

func medianDur(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// lazyOnce starts a memhog container with stdio on /dev/null (runc's own
// checkpoint cannot dump a host file), waits until its memory is touched
// and lets the mode checkpoint and restore it.
func lazyOnce(ctx context.Context, r *ckptRunc, m lazyMode, mib int) (time.Duration, time.Duration, error) {
	ctx, cancel := context.WithTimeout(log.WithLogger(ctx, r.logger), 5*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp(filepath.Dir(r.root), "lazy-")
	if err != nil {
		return 0, 0, err
	}
	defer os.RemoveAll(dir)
	r.seq++
	id := fmt.Sprintf("bench-lazy-%d-%d", os.Getpid(), r.seq)
	bundle := filepath.Join(dir, "bundle")
	if err := r.writeBundle(bundle, Workload{Args: []string{"/bin/memhog", strconv.Itoa(mib)}}); err != nil {
		return 0, 0, err
	}
	defer r.destroy(id)
	// Stdio /dev/null: the container keeps runc's stdio, and a pipe would
	// never reach EOF while it runs.
	if err := exec.CommandContext(ctx, r.runc, "--root", r.root, "run", "-d", "--bundle", bundle, id).Run(); err != nil {
		return 0, 0, fmt.Errorf("runc run: %w", err)
	}
	pid := runcPid(r, id)
	if err := waitFor(ctx, 60*time.Second, func() bool { return rssMiB(pid) >= mib }); err != nil {
		return 0, 0, fmt.Errorf("memhog did not fill its memory: %w", err)
	}
	running, in, err := m.run(ctx, r, id, bundle, dir)
	if err == nil && !alive(runcPid(r, id)) {
		err = fmt.Errorf("%s: the restored container does not run", m.name)
	}
	return running, in, err
}

func ckptRestoreMode(lazy bool) func(ctx context.Context, r *ckptRunc, id, bundle, dir string) (time.Duration, time.Duration, error) {
	return func(ctx context.Context, r *ckptRunc, id, bundle, dir string) (time.Duration, time.Duration, error) {
		images := filepath.Join(dir, "images")
		if _, err := container.Checkpoint(ctx, container.CheckpointOptions{Root: r.root, ID: id, ImagePath: images, Runc: r.runc}); err != nil {
			return 0, 0, fmt.Errorf("checkpoint: %w", err)
		}
		t0 := time.Now()
		rs, err := container.StartRestore(ctx, container.RestoreOptions{
			Root: r.root, ID: id, Bundle: bundle, ImagePath: images, WorkPath: filepath.Join(dir, "work"),
			Runc: r.runc, LazyPages: lazy,
		})
		if err != nil {
			return 0, 0, err
		}
		if err := rs.Finish(ctx); err != nil {
			return 0, 0, err
		}
		running := time.Since(t0)
		select {
		case <-rs.PagesIn():
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		}
		return running, time.Since(t0), rs.LazyErr()
	}
}

// runcLazyMode is runc's own path, as its checkpoint.bats drives it, with
// the pages from the local images.
func runcLazyMode(ctx context.Context, r *ckptRunc, id, bundle, dir string) (time.Duration, time.Duration, error) {
	images, work := filepath.Join(dir, "images"), filepath.Join(dir, "work")
	if out, err := exec.CommandContext(ctx, r.runc, "--root", r.root, "checkpoint", "--image-path", images, "--work-path", work, id).CombinedOutput(); err != nil {
		return 0, 0, fmt.Errorf("runc checkpoint: %w: %s", err, lastBytes(string(out), 300))
	}
	t0 := time.Now()
	statusR, statusW, err := os.Pipe()
	if err != nil {
		return 0, 0, err
	}
	defer statusR.Close()
	daemon := exec.CommandContext(ctx, "criu", "lazy-pages", "-D", images, "-W", work, "--status-fd", "3", "-o", "lazy-pages.log")
	daemon.ExtraFiles = []*os.File{statusW}
	if err := daemon.Start(); err != nil {
		statusW.Close()
		return 0, 0, err
	}
	statusW.Close()
	defer daemon.Process.Kill()
	if _, err := statusR.Read(make([]byte, 1)); err != nil {
		daemon.Wait()
		return 0, 0, fmt.Errorf("criu lazy-pages did not start: %s", lastBytes(readFile(filepath.Join(work, "lazy-pages.log")), 300))
	}
	restore := exec.CommandContext(ctx, r.runc, "--root", r.root, "restore", "-d", "--lazy-pages",
		"--image-path", images, "--work-path", work, "--bundle", bundle, id)
	if err := restore.Run(); err != nil {
		daemon.Process.Kill()
		daemon.Wait()
		return 0, 0, fmt.Errorf("runc restore --lazy-pages: %w: %s", err, lastBytes(readFile(filepath.Join(work, "restore.log")), 300))
	}
	running := time.Since(t0)
	if err := daemon.Wait(); err != nil {
		return 0, 0, fmt.Errorf("criu lazy-pages: %w", err)
	}
	return running, time.Since(t0), nil
}

func runcPid(r *ckptRunc, id string) int {
	data, err := os.ReadFile(filepath.Join(r.root, id, "state.json"))
	if err != nil {
		return 0
	}
	const key = `"init_process_pid":`
	i := strings.Index(string(data), key)
	if i < 0 {
		return 0
	}
	s := string(data[i+len(key):])
	j := strings.IndexAny(s, ",}")
	n, _ := strconv.Atoi(strings.TrimSpace(s[:j]))
	return n
}

// rssMiB is pid's resident memory.
func rssMiB(pid int) int {
	for _, l := range strings.Split(readFile(fmt.Sprintf("/proc/%d/status", pid)), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return kb >> 10
		}
	}
	return 0
}
