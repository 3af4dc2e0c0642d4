package soak

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ckpt-dev/ckpt/integration/containerd/harness"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
)

// Config says how long to soak and where to report.
type Config struct {
	// Cycles is the number of checkpoint/restore cycles.
	Cycles int
	// Warmup cycles run before the baseline sample: the first cycles fill
	// caches (CRIU's and runc's answers in /run/ckpt, containerd's pools).
	Warmup int
	// Every is how often (in cycles) a sample is printed.
	Every int
	// Out receives the progress lines (nil: none).
	Out io.Writer
	// ID is the container's id.
	ID string
}

// Result is what a soak saw.
type Result struct {
	Cycles   int
	Failures []error
	// Start is before any cycle, Base after the warm-up, End after the
	// last cycle (the container still running), Samples every Every.
	Start, Base, End Sample
	Samples          []Sample
	Elapsed          time.Duration
}

// Growth lists the counts End has above Base.
func (r Result) Growth() []string { return r.End.Growth(r.Base) }

// cycleTimeout bounds one checkpoint/restore cycle: a hang is a failure,
// not a stuck soak.
const cycleTimeout = time.Minute

// counter prints 1, 2, 3, ... every 50 ms; the count lives in the shell's
// memory, so a restored shell goes on from where it was.
var counter = []string{"sh", "-c", "i=0; while :; do i=$((i+1)); echo $i; sleep 0.05; done"}

// Containerd runs cfg.Cycles checkpoint/restore cycles of one counter
// container through ckpt's shim: containerd's checkpoint image route
// (container.Checkpoint with the task, exit; a new task from the image),
// which unpacks every restore's images into a ctrd-checkpoint dir. Each
// cycle checks that the restored counter goes on from where it was. A
// failed cycle is recorded and the container gets a fresh task.
func Containerd(ctx context.Context, d *harness.Daemon, cfg Config) (Result, error) {
	ctx = d.Context(ctx)
	var res Result
	c, err := d.Client.NewContainer(ctx, cfg.ID,
		client.WithNewSnapshot(cfg.ID, d.Image),
		client.WithNewSpec(oci.WithImageConfig(d.Image), oci.WithProcessArgs(counter...)),
		client.WithRuntime(harness.Runtime, nil))
	if err != nil {
		return res, err
	}
	defer removeContainer(context.WithoutCancel(ctx), c)
	s := &soaker{d: d, c: c}
	if err := s.fresh(ctx); err != nil {
		return res, fmt.Errorf("first task: %w", err)
	}
	res.Start = Measure(d)
	res.Base = res.Start
	start := time.Now()
	for i := 1; i <= cfg.Cycles; i++ {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		if err := s.cycle(ctx, i); err != nil {
			res.Failures = append(res.Failures, fmt.Errorf("cycle %d: %w", i, err))
			if cfg.Out != nil {
				fmt.Fprintf(cfg.Out, "FAIL cycle %d: %v\n", i, err)
			}
			if err := s.fresh(ctx); err != nil {
				return res, fmt.Errorf("fresh task after the failure of cycle %d: %w", i, err)
			}
		}
		res.Cycles = i
		if i == cfg.Warmup {
			res.Base = Measure(d)
		}
		if cfg.Every > 0 && i%cfg.Every == 0 {
			smp := Measure(d)
			res.Samples = append(res.Samples, smp)
			if cfg.Out != nil {
				el := time.Since(start)
				fmt.Fprintf(cfg.Out, "cycle %d %s (%.2f cycles/s) failures=%d %s\n", i, el.Round(time.Second), float64(i)/el.Seconds(), len(res.Failures), smp)
			}
		}
	}
	res.Elapsed = time.Since(start)
	res.End = Settled(func() Sample { return Measure(d) }, res.Base)
	return res, nil
}

type soaker struct {
	d      *harness.Daemon
	c      client.Container
	task   client.Task
	status <-chan client.ExitStatus
	out    *lines
}

// fresh replaces whatever task the container has by a new counter.
func (s *soaker) fresh(ctx context.Context) error {
	removeTask(ctx, s.c)
	s.task = nil
	return s.run(ctx, nil)
}

// run creates and starts a task (from a checkpoint with opt) and waits
// for its first line of output.
func (s *soaker) run(ctx context.Context, opt client.NewTaskOpts) error {
	out := &lines{}
	ioc := cio.NewCreator(cio.WithFIFODir(filepath.Join(s.d.Dir, "fifo")), cio.WithStreams(nil, out, io.Discard))
	var opts []client.NewTaskOpts
	if opt != nil {
		opts = append(opts, opt)
	}
	task, err := s.c.NewTask(ctx, ioc, opts...)
	if err != nil {
		return fmt.Errorf("create task: %w", err)
	}
	s.task, s.out = task, out
	if s.status, err = task.Wait(ctx); err != nil {
		return err
	}
	if err := task.Start(ctx); err != nil {
		return fmt.Errorf("start task: %w", err)
	}
	return out.waitLines(ctx, 2, 10*time.Second)
}

// cycle checkpoints the running counter (the task exits), restores it
// from the checkpoint image and checks that it counts on.
func (s *soaker) cycle(ctx context.Context, i int) error {
	ctx, cancel := context.WithTimeout(ctx, cycleTimeout)
	defer cancel()
	img, err := s.c.Checkpoint(ctx, fmt.Sprintf("soak/%s:%d", s.c.ID(), i), client.WithCheckpointTaskExit, client.WithCheckpointTask)
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	defer s.d.Client.ImageService().Delete(context.WithoutCancel(ctx), img.Name(), images.SynchronousDelete())
	select {
	case <-s.status:
	case <-ctx.Done():
		return fmt.Errorf("no exit after the checkpoint: %w", ctx.Err())
	}
	last := s.out.last()
	if _, err := s.task.Delete(ctx); err != nil {
		return fmt.Errorf("delete the checkpointed task: %w", err)
	}
	s.task = nil
	if err := s.run(ctx, client.WithTaskCheckpoint(img)); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if first := s.out.first(); first <= last {
		return fmt.Errorf("the restored counter starts at %d; the checkpointed one had reached %d", first, last)
	}
	return nil
}

func removeTask(ctx context.Context, c client.Container) {
	t, err := c.Task(ctx, nil)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if ch, err := t.Wait(ctx); err == nil && t.Kill(ctx, syscall.SIGKILL, client.WithKillAll) == nil {
		select {
		case <-ch:
		case <-ctx.Done():
		}
	}
	t.Delete(ctx, client.WithProcessKill)
}

func removeContainer(ctx context.Context, c client.Container) {
	removeTask(ctx, c)
	if err := c.Delete(ctx, client.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		fmt.Printf("soak: delete container %s: %v\n", c.ID(), err)
	}
}

// lines keeps a counter's first and last numbers, not its whole output.
type lines struct {
	mu            sync.Mutex
	n             int
	firstN, lastN int
	partial       string
}

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.partial + string(p)
	parts := strings.Split(s, "\n")
	l.partial = parts[len(parts)-1]
	for _, line := range parts[:len(parts)-1] {
		v, err := strconv.Atoi(strings.TrimSpace(line))
		if err != nil {
			continue
		}
		if l.n == 0 {
			l.firstN = v
		}
		l.lastN = v
		l.n++
	}
	return len(p), nil
}

func (l *lines) last() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastN
}

func (l *lines) first() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.firstN
}

func (l *lines) waitLines(ctx context.Context, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		l.mu.Lock()
		got := l.n
		l.mu.Unlock()
		if got >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d lines of output in %s, want %d", got, timeout, n)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Settled is the sample measure takes once no count is above base, or
// after a second. A descriptor or mount held for an instant (containerd's
// GC, the last cycle's shim exiting) is not a leak: a count must stay up
// for a second to count as growth.
func Settled(measure func() Sample, base Sample) Sample {
	s := measure()
	for i := 0; i < 10 && len(s.Growth(base)) > 0; i++ {
		time.Sleep(100 * time.Millisecond)
		s = measure()
	}
	return s
}
