// Command bench measures checkpoint and restore: ckpt's shim against
// containerd's runc shim through one private containerd, raw CRIU as the
// floor, and ckpt on plain runc, interleaved, several repetitions each.
// It is a benchmark: it reports figures and never fails on a timing.
package main

import (
	"context"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
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

// emptyNetNS makes every checkpoint leave the network namespace's
// contents out (CRIU's empty_ns), as runc's CLI always does.
// pageReporting leaves a VM's free page reporting on (guestmem.go).
var pageReporting = flag.Bool("page-reporting", false, "leave a VM's free page reporting on (default: paused for the run, see bench/guestmem.go)")

var emptyNetNS = flag.Bool("empty-netns", false, "checkpoint with CRIU's empty_ns=network everywhere (runc's CLI always does)")

func main() {
	out := flag.String("out", "results", "folder for results.md, results.json and memory.png")
	reps := flag.Int("reps", 11, "repetitions of each workload per target")
	sizes := flag.String("sizes", "64,512,1024,2048", "memory workloads, MiB")
	only := flag.String("targets", "", "comma-separated targets (default: all that can run here): "+
		strings.Join(targetOrder, ", "))
	keep := flag.String("keep", "", "folder to keep each run's CRIU logs and statistics and containerd's log in (default: none)")
	from := flag.String("from", "", "measure nothing: render the results.json of an earlier run into -out")
	pods := flag.Int("pods", 0, "measure nothing else: the shims' memory (PSS) with this many idle pods of 3 containers on ckpt's CRI handler and as many on runc's (pods.go)")
	flag.StringVar(&podsSettle, "pods-settle", podsSettle, "with -pods: comma-separated times after the last pod's start at which to measure")
	hostRun := flag.Bool("host-run", false, "measure with the host's /run as it is, also where it is not a tmpfs (CRIU then re-detects kernel features on every run)")
	flag.Parse()
	var err error
	switch {
	case *migrateChildFlag:
		err = migrateChild()
	case *from != "":
		err = rerender(*from, *out)
	case *pods > 0:
		err = runPods(*pods, *out)
	case !*hostRun:
		if err = reexecOnPrivateRun(); err != nil {
			break
		}
		fallthrough
	default:
		err = run(*out, *reps, parseSizes(*sizes), wanted(*only), *keep)
	}
	if err != nil {
		logrus.Fatal(err)
	}
}

// run measures and writes the results; whatever it set up is torn down
// on return, also after an interrupt, which still writes what was measured.
func run(out string, reps int, sizes []int, want func(string) bool, keep string) error {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, unix.SIGTERM)
	defer cancel()
	scratch, cleanup, err := tmpfs()
	if err != nil {
		return err
	}
	defer cleanup()
	memhog, err := buildMemhog(scratch)
	if err != nil {
		return err
	}
	memState := pageReportingState()
	if !*pageReporting {
		restore, state := pausePageReporting()
		defer restore()
		memState = state
	}
	warm := sizes
	if *migrateOnly {
		warm = parseSizes(*migrateSizes)
	}
	if err := warmMemory(scratch, warmMiB(warm)); err != nil {
		return err
	}
	if *lazyOnly {
		return runLazy(ctx, scratch, memhog, out)
	}
	if *migrateOnly {
		return runMigrate(ctx, scratch, memhog, out, memState)
	}
	var targets []Target
	if want(targetRawCRIU) {
		criuPath, _ := exec.LookPath("criu")
		targets = append(targets, &rawCRIU{criu: criuPath, memhog: memhog})
	}
	extra, stop := extraTargets(ctx, scratch, memhog, keep, want)
	defer stop()
	targets = append(targets, extra...)
	if len(targets) == 0 {
		return fmt.Errorf("no target to run (targets: %s)", strings.Join(targetOrder, ", "))
	}

	// The first CRIU run of a boot detects the kernel's features and, where
	// /run is a tmpfs, keeps them; no target should pay that in its first
	// sample.
	if criuPath, err := exec.LookPath("criu"); err == nil {
		exec.Command(criuPath, "check").Run()
	}
	samples, err := measure(ctx, targets, workloads(sizes), reps, scratch, keep)
	if err != nil {
		return err
	}
	env := environment(memState)
	if err := writeResults(out, samples, env); err != nil {
		return err
	}
	fmt.Println(markdown(samples, env))
	if err := runLazy(ctx, scratch, memhog, out); err != nil {
		return fmt.Errorf("lazy restore comparison: %w", err)
	}
	if err := runMigrate(ctx, scratch, memhog, out, memState); err != nil {
		return fmt.Errorf("live-migration comparison: %w", err)
	}
	fmt.Printf("results in %s\n", out)
	return nil
}

// warmMiB is the memory the largest workload needs at once: its process
// and its image, and some for the rest; at most what the scratch tmpfs
// takes.
func warmMiB(sizes []int) int {
	if len(sizes) == 0 {
		return 0
	}
	return min(2*slices.Max(sizes)+512, 6<<10)
}

func parseSizes(list string) []int {
	var sizes []int
	for _, f := range strings.Split(list, ",") {
		if v, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && v > 0 {
			sizes = append(sizes, v)
		}
	}
	return sizes
}

// wanted says whether a target was asked for (all when list is empty).
func wanted(list string) func(string) bool {
	if strings.TrimSpace(list) == "" {
		return func(string) bool { return true }
	}
	keep := map[string]bool{}
	for _, n := range strings.Split(list, ",") {
		keep[strings.TrimSpace(n)] = true
	}
	return func(name string) bool { return keep[name] }
}

// measure runs every target on every workload reps times. Targets are
// interleaved within each repetition so that drift on the machine hits
// all of them alike; a failed run is recorded and the run goes on.
func measure(ctx context.Context, targets []Target, wls []Workload, reps int, scratch, keep string) ([]Sample, error) {
	var samples []Sample
	for _, w := range wls {
		for rep := 1; rep <= reps; rep++ {
			// The order rotates too: no target always runs right after
			// the same other one.
			for i := range targets {
				t := targets[(i+rep)%len(targets)]
				if ctx.Err() != nil {
					return samples, nil
				}
				if !t.Supports(w) {
					continue
				}
				dir, err := os.MkdirTemp(scratch, "run-")
				if err != nil {
					return samples, err
				}
				s, err := t.Run(ctx, w, dir)
				s.Target, s.Workload, s.MemMiB, s.Rep = t.Name(), w.Name, w.MemMiB, rep
				if err != nil {
					s.Err = err.Error()
				}
				if keep != "" {
					if err := keepLogs(dir, filepath.Join(keep, fmt.Sprintf("%s-%s-%d", s.Target, s.Workload, rep))); err != nil {
						logrus.WithError(err).Warn("keep the run's logs")
					}
				}
				os.RemoveAll(dir)
				logrus.WithFields(logrus.Fields{"target": s.Target, "workload": s.Workload, "rep": rep,
					"checkpoint": s.Checkpoint.Round(time.Millisecond), "restore": s.Restore.Round(time.Millisecond),
					"error": s.Err}).Info("sample")
				samples = append(samples, s)
			}
		}
	}
	return samples, nil
}

// keepLogs copies what a run left in dir except CRIU's images.
func keepLogs(dir, to string) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		switch {
		case d.IsDir() && (d.Name() == "applets" || d.Name() == "rootfs"):
			return filepath.SkipDir
		case d.IsDir():
			return os.MkdirAll(filepath.Join(to, rel), 0o755)
		case !d.Type().IsRegular() || strings.HasSuffix(p, ".img"):
			return nil
		}
		return copyFile(p, filepath.Join(to, rel))
	})
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
	// From bench's module root, so that a bench binary runs from anywhere
	// inside the checkout (inside bench/ or in the product's module).
	mod, err := exec.Command("go", "env", "GOMOD").Output()
	m := strings.TrimSpace(string(mod))
	if err != nil || m == "" || m == os.DevNull {
		return "", fmt.Errorf("build memhog: run the benchmark from inside the ckpt checkout (go env GOMOD: %q, %v)", m, err)
	}
	src := filepath.Dir(m)
	if filepath.Base(src) != "bench" {
		src = filepath.Join(src, "bench")
	}
	cmd := exec.Command("go", "build", "-o", out, "./memhog")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build memhog: %w: %s", err, b)
	}
	return out, nil
}

func environment(memState string) string {
	return environmentOf(memState, "images on tmpfs")
}

// environmentOf names the machine, the components and where checkpoints
// are kept (storage).
func environmentOf(memState, storage string) string {
	var uts unix.Utsname
	unix.Uname(&uts)
	criuV, _ := exec.Command("criu", "--version").Output()
	runcV, _ := exec.Command("runc", "--version").Output()
	ctrdV, _ := exec.Command("containerd", "--version").Output()
	first := func(b []byte) string { return strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]) }
	return fmt.Sprintf("Run %s on kernel %s, %d CPUs; criu %s; %s; %s; %s; %s; %s.",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), unix.ByteSliceToString(uts.Release[:]), runtime.NumCPU(),
		strings.TrimPrefix(first(criuV), "Version: "), first(runcV), first(ctrdV), storage, runState(), memState)
}
