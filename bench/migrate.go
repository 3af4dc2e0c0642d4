package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	mharness "github.com/ckpt-dev/ckpt/integration/migrate/harness"
	"github.com/ckpt-dev/ckpt/internal/ctrd"
	"github.com/ckpt-dev/ckpt/runtime/migrate"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/sirupsen/logrus"
)

// The live-migration comparison: a memhog container moves from one
// containerd to another ("two hosts on one machine", the migration tests'
// harness: two network namespaces joined by veth, the target's API behind
// mutual TLS) by ckpt's post-copy, ckpt's stop-and-copy, and the path a
// user has without ckpt (containerd's runc shim, checkpoint, copy of the
// blobs, restore). Each sample is checked: the moved memhog must beat on
// from where the source stopped and find every page it wrote intact.
var (
	migrateSizes = flag.String("migrate-sizes", "64,512,1024,2048", "memory of the live-migration comparison, MiB (empty or 0: skip it)")
	migrateReps  = flag.Int("migrate-reps", 3, "repetitions of each live-migration mode and size (0: skip it)")
	migrateOnly  = flag.Bool("migrate-only", false, "run only the live-migration comparison")
	// migrateChildFlag marks the child that runs one move in the source's
	// network namespace (migratechild.go).
	migrateChildFlag = flag.Bool("migrate-child", false, "internal: run one move described on stdin")
)

// migSample is one move.
type migSample struct {
	Mode     string        `json:"mode"`
	MemMiB   int           `json:"mem_mib"`
	Rep      int           `json:"rep"`
	Downtime time.Duration `json:"downtime_ns,omitempty"`
	Total    time.Duration `json:"total_ns,omitempty"`
	// TotalFromRun: Total is migrate.Result.Total; TotalIsCall: it is
	// Run's whole call (migrateOutcome).
	TotalFromRun bool `json:"total_from_run,omitempty"`
	TotalIsCall  bool `json:"total_is_call,omitempty"`
	// Phases: checkpoint, copy, restore (migrateOutcome.Phases).
	Phases map[string]time.Duration `json:"phases_ns,omitempty"`
	// Check is the moved memhog's answer ("check ok PAGES").
	Check        string `json:"check,omitempty"`
	NotAvailable string `json:"not_available,omitempty"`
	Err          string `json:"error,omitempty"`
}

// runMigrate runs the comparison and writes migration.md, .json and .png
// into out.
func runMigrate(ctx context.Context, scratch, memhog, out, memState string) error {
	sizes := parseSizes(*migrateSizes)
	if len(sizes) == 0 || *migrateReps <= 0 {
		return nil
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	rootfs := filepath.Join(scratch, "rootfs")
	if _, err := os.Stat(rootfs); err != nil {
		if err := buildRootfs(rootfs, memhog); err != nil {
			return err
		}
	}
	sctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	h, err := mharness.Start(sctx, rootfs, "bm")
	cancel()
	if err != nil {
		return fmt.Errorf("two hosts: %w", err)
	}
	defer func() {
		if err := h.Stop(); err != nil {
			logrus.WithError(err).Warn("stop the two hosts")
		}
	}()
	m := &migrator{h: h, self: self, logs: filepath.Join(h.Dir, "stdio"), unavailable: map[string]string{}}
	if err := os.MkdirAll(m.logs, 0o755); err != nil {
		return err
	}
	var samples []migSample
	for _, mib := range sizes {
		for rep := 1; rep <= *migrateReps; rep++ {
			// Modes interleaved, and rotated so that none always follows
			// the same other one.
			for i := range migrateModes {
				if ctx.Err() != nil {
					break
				}
				mode := migrateModes[(i+rep)%len(migrateModes)]
				s := m.once(ctx, mode, mib, rep)
				logrus.WithFields(logrus.Fields{"mode": mode, "MiB": mib, "rep": rep,
					"downtime": s.Downtime.Round(time.Millisecond), "total": s.Total.Round(time.Millisecond),
					"check": s.Check, "not available": s.NotAvailable, "error": s.Err}).Info("migration")
				samples = append(samples, s)
			}
		}
	}
	// The containerds keep checkpoints where a host keeps them: in their
	// content stores, on disk.
	env := environmentOf(memState, "checkpoints in each containerd's content store on disk, copied to the target over mutual TLS on a veth pair")
	fmt.Print(migrationMarkdown(samples, *migrateReps, env))
	return writeMigration(out, samples, *migrateReps, env)
}

type migrator struct {
	h    *mharness.Hosts
	self string
	logs string
	seq  int
	// unavailable holds a mode's refusal: Run refuses before it touches
	// the source, so asking again (after filling GiBs) tells nothing new.
	unavailable map[string]string
}

// once starts memhog on the source, moves it by mode and checks it.
func (m *migrator) once(ctx context.Context, mode string, mib, rep int) (s migSample) {
	s = migSample{Mode: mode, MemMiB: mib, Rep: rep}
	if why, ok := m.unavailable[mode]; ok {
		s.NotAvailable = why
		return s
	}
	m.seq++
	id := fmt.Sprintf("bm-%d-%d", mib, m.seq)
	srcLog, dstLog := filepath.Join(m.logs, id+".src"), filepath.Join(m.logs, id+".dst")
	defer func() {
		for _, d := range []*ctrd.Daemon{m.h.Src, m.h.Dst} {
			removeEverywhere(d, id)
		}
		os.Remove(srcLog)
		os.Remove(dstLog)
	}()
	fail := func(err error) migSample { s.Err = err.Error(); return s }
	rt := ctrd.Runtime
	if mode == modePlainPath {
		rt = runcShimRuntime
	}
	if err := m.startSource(ctx, id, rt, mib, srcLog); err != nil {
		return fail(err)
	}
	out, err := m.child(ctx, migrateJob{
		Mode: mode, Source: m.h.Src.Address, Namespace: m.h.Src.Namespace, ID: id,
		Target: migrate.Endpoint{Address: "tcp://" + m.h.Addr(mharness.DstPort),
			CA: m.h.PKI.CA, Cert: m.h.PKI.ClientCert, Key: m.h.PKI.ClientKey},
		SrcIP: m.h.Net.SrcIP, Stdout: dstLog,
	})
	switch {
	case err != nil:
		return fail(err)
	case out.Refused != "":
		m.unavailable[mode] = out.Refused
		s.NotAvailable = out.Refused
		return s
	case out.Err != "":
		return fail(fmt.Errorf("%s", out.Err))
	}
	// A wrong result fails the sample: its times are not reported.
	check, err := m.verify(ctx, id, srcLog, dstLog)
	if err != nil {
		return fail(fmt.Errorf("wrong result on the target: %w", err))
	}
	s.Downtime, s.Total, s.TotalFromRun, s.TotalIsCall, s.Phases, s.Check = out.Downtime, out.Total, out.TotalFromRun, out.TotalIsCall, out.Phases, check
	return s
}

// startSource runs memhog in a new container on the source, its stdout
// appended to a file, until it has written its memory and beats.
func (m *migrator) startSource(ctx context.Context, id, runtime string, mib int, log string) error {
	d := m.h.Src
	ctx, cancel := context.WithTimeout(d.Context(ctx), 3*time.Minute)
	defer cancel()
	c, err := d.Client.NewContainer(ctx, id, client.WithNewSnapshot(id, d.Image),
		client.WithNewSpec(oci.WithImageConfig(d.Image), oci.WithProcessArgs("/bin/memhog", strconv.Itoa(mib))),
		client.WithRuntime(runtime, nil))
	if err != nil {
		return fmt.Errorf("new container: %w", err)
	}
	task, err := c.NewTask(ctx, cio.LogFile(log))
	if err != nil {
		return fmt.Errorf("new task: %w", err)
	}
	if err := task.Start(ctx); err != nil {
		return fmt.Errorf("start: %w", err)
	}
	if _, err := waitMatch(ctx, log, beatLine, 2*time.Minute); err != nil {
		return fmt.Errorf("memhog on the source: %w", err)
	}
	return nil
}

var (
	beatLine  = regexp.MustCompile(`(?m)^beat (\d+) (\d+)$`)
	checkLine = regexp.MustCompile(`(?m)^check (.*)$`)
)

// verify checks the moved memhog: it beats on past the source's last
// beat (the same process, not a restart), and on SIGUSR1 finds every
// page as it wrote it.
func (m *migrator) verify(ctx context.Context, id, srcLog, dstLog string) (string, error) {
	last := lastBeat(readFile(srcLog))
	if last == 0 {
		return "", fmt.Errorf("no beat on the source")
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		first, n := firstBeat(readFile(dstLog))
		if n > 0 && (first <= last || first > last+50) {
			return "", fmt.Errorf("the moved memhog beats %d first; the source's last beat was %d", first, last)
		}
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no beat on the target in 30s (source's last: %d)", last)
		}
		time.Sleep(20 * time.Millisecond)
	}
	d := m.h.Dst
	cctx, cancel := context.WithTimeout(d.Context(ctx), 2*time.Minute)
	defer cancel()
	c, err := d.Client.LoadContainer(cctx, id)
	if err != nil {
		return "", err
	}
	task, err := c.Task(cctx, nil)
	if err != nil {
		return "", err
	}
	if err := task.Kill(cctx, syscall.SIGUSR1); err != nil {
		return "", err
	}
	got, err := waitMatch(cctx, dstLog, checkLine, 2*time.Minute)
	if err != nil {
		return "", err
	}
	if !strings.HasPrefix(got[1], "ok") {
		return "", fmt.Errorf("memhog's memory check: %s", got[1])
	}
	return got[0], nil
}

func lastBeat(s string) int {
	ms := beatLine.FindAllStringSubmatch(s, -1)
	if len(ms) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(ms[len(ms)-1][1])
	return n
}

// firstBeat is the first beat number in s, and how many beats s has.
func firstBeat(s string) (int, int) {
	ms := beatLine.FindAllStringSubmatch(s, -1)
	if len(ms) == 0 {
		return 0, 0
	}
	n, _ := strconv.Atoi(ms[0][1])
	return n, len(ms)
}

// waitMatch waits until re matches the file's content.
func waitMatch(ctx context.Context, path string, re *regexp.Regexp, timeout time.Duration) ([]string, error) {
	deadline := time.Now().Add(timeout)
	for {
		if m := re.FindStringSubmatch(readFile(path)); m != nil {
			return m, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("no %q in %s after %s: %q", re, filepath.Base(path), timeout, lastBytes(readFile(path), 200))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// child runs one move in the source's network namespace.
func (m *migrator) child(ctx context.Context, job migrateJob) (migrateOutcome, error) {
	var out migrateOutcome
	in, err := json.Marshal(job)
	if err != nil {
		return out, err
	}
	cctx, cancel := context.WithTimeout(ctx, 16*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(cctx, "nsenter", "--net="+mharness.Path(m.h.Net.Src), "--", m.self, "-migrate-child")
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(in), &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Run(); err != nil {
		return out, fmt.Errorf("%s: %w: %s", job.Mode, err, lastBytes(stderr.String(), 400))
	}
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		return out, fmt.Errorf("%s: the child's answer %q: %w (stderr: %s)", job.Mode, lastBytes(stdout.String(), 200), err, lastBytes(stderr.String(), 400))
	}
	return out, nil
}

// removeEverywhere deletes container id and its task from d, whatever
// state a move left them in.
func removeEverywhere(d *ctrd.Daemon, id string) {
	ctx, cancel := context.WithTimeout(d.Context(context.Background()), time.Minute)
	defer cancel()
	c, err := d.Client.LoadContainer(ctx, id)
	if err != nil {
		return
	}
	if task, err := c.Task(ctx, nil); err == nil {
		task.Kill(ctx, syscall.SIGKILL)
		if _, err := task.Delete(ctx, client.WithProcessKill); err != nil {
			logrus.WithError(err).WithField("id", id).Warn("delete a task after a move")
		}
	}
	if err := c.Delete(ctx, client.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		logrus.WithError(err).WithField("id", id).Warn("delete a container after a move")
	}
	// A failed move can leave its checkpoint image (GiBs) behind.
	imgs, _ := d.Client.ImageService().List(ctx)
	for _, i := range imgs {
		if strings.Contains(i.Name, "/"+id+":") {
			d.Client.ImageService().Delete(ctx, i.Name)
		}
	}
}
