// Command bench measures checkpoint and restore: ckpt's shim against
// containerd's runc shim through one private containerd, raw CRIU as the
// floor, and ckpt on plain runc, interleaved, several repetitions each.
// It is a benchmark: it reports figures and never fails on a timing.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

const (
	targetRawCRIU  = "raw-criu"
	targetCkptRunc = "ckpt-runc"
	targetRuncShim = "runc-shim"
	targetCkptShim = "ckpt-shim"
)

// Target checkpoints and restores one workload once.
type Target interface {
	Name() string
	Supports(Workload) bool
	// Run starts w, checkpoints it, restores it, checks it runs, and
	// cleans up; dir is scratch space on tmpfs.
	Run(ctx context.Context, w Workload, dir string) (Sample, error)
}

func main() {
	out := flag.String("out", "results", "folder for results.md, results.json and memory.png")
	reps := flag.Int("reps", 5, "repetitions of each workload per target")
	sizesFlag := flag.String("sizes", "64,512,2048", "memory workloads, MiB")
	only := flag.String("targets", "", "comma-separated targets (default: all that can run here)")
	flag.Parse()

	ctx := context.Background()
	var sizes []int
	for _, f := range strings.Split(*sizesFlag, ",") {
		if v, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && v > 0 {
			sizes = append(sizes, v)
		}
	}
	scratch, cleanup, err := tmpfs()
	if err != nil {
		logrus.Fatal(err)
	}
	defer cleanup()
	memhog, err := buildMemhog(scratch)
	if err != nil {
		logrus.Fatal(err)
	}
	criuPath, _ := exec.LookPath("criu")

	targets := []Target{&rawCRIU{criu: criuPath, memhog: memhog}}
	targets = append(targets, extraTargets(ctx, scratch, memhog)...)
	if *only != "" {
		keep := map[string]bool{}
		for _, n := range strings.Split(*only, ",") {
			keep[strings.TrimSpace(n)] = true
		}
		var t []Target
		for _, x := range targets {
			if keep[x.Name()] {
				t = append(t, x)
			}
		}
		targets = t
	}

	var samples []Sample
	for _, w := range workloads(sizes) {
		// Interleave targets within each repetition so drift on the
		// machine hits all of them alike.
		for rep := 1; rep <= *reps; rep++ {
			for _, t := range targets {
				if !t.Supports(w) {
					continue
				}
				dir, err := os.MkdirTemp(scratch, "run-")
				if err != nil {
					logrus.Fatal(err)
				}
				s, err := t.Run(ctx, w, dir)
				s.Target, s.Workload, s.MemMiB, s.Rep = t.Name(), w.Name, w.MemMiB, rep
				if err != nil {
					s.Err = err.Error()
				}
				os.RemoveAll(dir)
				logrus.WithFields(logrus.Fields{"target": s.Target, "workload": s.Workload, "rep": rep,
					"checkpoint": s.Checkpoint.Round(time.Millisecond), "restore": s.Restore.Round(time.Millisecond),
					"error": s.Err}).Info("sample")
				samples = append(samples, s)
			}
		}
	}
	env := environment()
	if err := writeResults(*out, samples, env); err != nil {
		logrus.Fatal(err)
	}
	fmt.Println(markdown(samples, env))
	fmt.Printf("results in %s\n", *out)
}

// tmpfs mounts scratch space in memory so disk speed does not decide.
func tmpfs() (string, func(), error) {
	dir, err := os.MkdirTemp("", "ckpt-bench-")
	if err != nil {
		return "", nil, err
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=8g"); err != nil {
		return "", nil, fmt.Errorf("mount tmpfs on %s: %w", dir, err)
	}
	return dir, func() { unix.Unmount(dir, unix.MNT_DETACH); os.Remove(dir) }, nil
}

func buildMemhog(dir string) (string, error) {
	out := filepath.Join(dir, "memhog")
	cmd := exec.Command("go", "build", "-o", out, "./bench/memhog")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build memhog: %v: %s", err, b)
	}
	return out, nil
}

func environment() string {
	var uts unix.Utsname
	unix.Uname(&uts)
	criuV, _ := exec.Command("criu", "--version").Output()
	runcV, _ := exec.Command("runc", "--version").Output()
	ctrdV, _ := exec.Command("containerd", "--version").Output()
	first := func(b []byte) string { return strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]) }
	return fmt.Sprintf("Run %s on kernel %s, %d CPUs; criu %s; %s; %s; images on tmpfs.",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), unix.ByteSliceToString(uts.Release[:]), runtime.NumCPU(),
		strings.TrimPrefix(first(criuV), "Version: "), first(runcV), first(ctrdV))
}
