package containerd_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ckpt-dev/ckpt/integration/containerd/harness"
	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1/stats"
	cgroupsv2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// TestTaskRunExecKill: a task's output reaches the client, execs run in
// it with their own output and exit status, Pids names the execs, and a
// killed task reports 137; the shim publishes the task events.
func TestTaskRunExecKill(t *testing.T) {
	d := daemon(t)
	ctx := testContext(t, d)
	c := newContainer(t, d, ctx, []string{"sh", "-c", "echo hello-from-init; exec sleep 1000"})
	topics := watchEvents(t, d, ctx, c.ID())

	out := &syncBuffer{}
	task, statusC := startTask(t, ctx, c, streams(d, nil, out, out, false))
	if task.Pid() == 0 {
		t.Fatal("Create returned pid 0")
	}
	waitOutput(t, out, "hello-from-init", 10*time.Second)
	if st, err := task.Status(ctx); err != nil || st.Status != client.Running {
		t.Fatalf("status %v, %v; want running", st.Status, err)
	}

	spec, err := c.Spec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pspec := *spec.Process
	pspec.Args = []string{"sh", "-c", "echo exec-out; echo exec-err >&2; exit 3"}
	eout, eerr := &syncBuffer{}, &syncBuffer{}
	p, err := task.Exec(ctx, "exec-short", &pspec, streams(d, nil, eout, eerr, false))
	if err != nil {
		t.Fatal(err)
	}
	pc, err := p.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if st := waitStatus(t, pc, 10*time.Second); st.ExitCode() != 3 {
		t.Errorf("exec exit status %d, want 3", st.ExitCode())
	}
	if _, err := p.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	if eout.String() != "exec-out\n" || eerr.String() != "exec-err\n" {
		t.Errorf("exec stdout %q, stderr %q", eout.String(), eerr.String())
	}

	pspec.Args = []string{"sleep", "1000"}
	long, err := task.Exec(ctx, "exec-long", &pspec, streams(d, nil, nil, nil, false))
	if err != nil {
		t.Fatal(err)
	}
	lc, err := long.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := long.Start(ctx); err != nil {
		t.Fatal(err)
	}
	procs, err := task.Pids(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var pids []uint32
	execOf := map[uint32]string{}
	for _, pi := range procs {
		pids = append(pids, pi.Pid)
		if pi.Info != nil {
			v, err := typeurl.UnmarshalAny(pi.Info)
			if err != nil {
				t.Fatal(err)
			}
			execOf[pi.Pid] = v.(*options.ProcessDetails).ExecID
		}
	}
	if !slices.Contains(pids, task.Pid()) || execOf[long.Pid()] != "exec-long" {
		t.Errorf("pids %v (execs %v); want the init %d and exec-long %d", pids, execOf, task.Pid(), long.Pid())
	}
	if err := long.Kill(ctx, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if st := waitStatus(t, lc, 10*time.Second); st.ExitCode() != 137 {
		t.Errorf("killed exec: exit status %d, want 137", st.ExitCode())
	}
	if _, err := long.Delete(ctx); err != nil {
		t.Fatal(err)
	}

	if err := task.Kill(ctx, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if st := waitStatus(t, statusC, 10*time.Second); st.ExitCode() != 137 {
		t.Errorf("killed task: exit status %d, want 137", st.ExitCode())
	}
	st, err := task.Delete(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.ExitCode() != 137 {
		t.Errorf("delete: exit status %d, want 137", st.ExitCode())
	}
	want := []string{"/tasks/create", "/tasks/start", "/tasks/exec-added", "/tasks/exec-started", "/tasks/exit", "/tasks/delete"}
	topics.expect(t, want, 10*time.Second)
}

// TestTaskExitStatusAndOutput: a task that exits at once reports its
// status, and all of its stdout and stderr are delivered (the shim's Wait
// returns after the copy). Repeated, for the exit-before-start race.
func TestTaskExitStatusAndOutput(t *testing.T) {
	d := daemon(t)
	ctx := testContext(t, d)
	for i := range 5 {
		c := newContainer(t, d, ctx, []string{"sh", "-c", fmt.Sprintf("echo out-%d; echo err-%d >&2; exit 7", i, i)})
		out, errOut := &syncBuffer{}, &syncBuffer{}
		task, statusC := startTask(t, ctx, c, streams(d, nil, out, errOut, false))
		if st := waitStatus(t, statusC, 10*time.Second); st.ExitCode() != 7 {
			t.Errorf("run %d: exit status %d, want 7", i, st.ExitCode())
		}
		if st, err := task.Status(ctx); err != nil || st.Status != client.Stopped || st.ExitStatus != 7 {
			t.Errorf("run %d: status %+v, %v; want stopped, 7", i, st, err)
		}
		if _, err := task.Delete(ctx); err != nil {
			t.Fatal(err)
		}
		if out.String() != fmt.Sprintf("out-%d\n", i) || errOut.String() != fmt.Sprintf("err-%d\n", i) {
			t.Errorf("run %d: stdout %q, stderr %q", i, out.String(), errOut.String())
		}
	}
}

// TestTaskTTY: a terminal task's shell answers typed input, and ResizePty
// reaches the pty (stty size), for the init and for a terminal exec.
func TestTaskTTY(t *testing.T) {
	d := daemon(t)
	ctx := testContext(t, d)
	c, task, statusC, typed, out := startTTYShell(t, d, ctx)
	if err := task.Resize(ctx, 91, 37); err != nil {
		t.Fatal(err)
	}
	typeLine(t, typed, "stty size")
	waitOutput(t, out, "37 91", 10*time.Second)
	typeLine(t, typed, "echo $((6*7))x")
	waitOutput(t, out, "42x", 10*time.Second)

	spec, err := c.Spec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pspec := *spec.Process
	pspec.Args = []string{"sh"}
	pspec.Terminal = true
	estdin, etyped := io.Pipe()
	defer etyped.Close()
	eout := &syncBuffer{}
	p, err := task.Exec(ctx, "tty-exec", &pspec, streams(d, estdin, eout, nil, true))
	if err != nil {
		t.Fatal(err)
	}
	pc, err := p.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.Resize(ctx, 120, 50); err != nil {
		t.Fatal(err)
	}
	typeLine(t, etyped, "stty size; exit 4")
	if st := waitStatus(t, pc, 10*time.Second); st.ExitCode() != 4 {
		t.Errorf("tty exec: exit status %d, want 4", st.ExitCode())
	}
	if _, err := p.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(eout.String(), "50 120") {
		t.Errorf("tty exec output %q has no 50 120", eout.String())
	}

	typeLine(t, typed, "exit 5")
	if st := waitStatus(t, statusC, 10*time.Second); st.ExitCode() != 5 {
		t.Errorf("exit status %d, want 5", st.ExitCode())
	}
	if _, err := task.Delete(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestTaskPauseResumeStats: Pause freezes, Resume thaws, both are
// reported in the task's status; Metrics returns cgroup metrics.
func TestTaskPauseResumeStats(t *testing.T) {
	d := daemon(t)
	ctx := testContext(t, d)
	c := newContainer(t, d, ctx, []string{"sh", "-c", "while :; do echo tick; sleep 0.05; done"})
	topics := watchEvents(t, d, ctx, c.ID())
	out := &syncBuffer{}
	task, statusC := startTask(t, ctx, c, streams(d, nil, out, nil, false))
	waitOutput(t, out, "tick", 10*time.Second)
	if err := task.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := task.Status(ctx); err != nil || st.Status != client.Paused {
		t.Fatalf("after pause: %v, %v", st.Status, err)
	}
	// Frozen: no more output (once what was in flight has arrived).
	time.Sleep(300 * time.Millisecond)
	frozen := out.String()
	time.Sleep(500 * time.Millisecond)
	if out.String() != frozen {
		t.Error("a paused task kept writing")
	}
	if err := task.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := task.Status(ctx); err != nil || st.Status != client.Running {
		t.Fatalf("after resume: %v, %v", st.Status, err)
	}
	n := strings.Count(out.String(), "tick")
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(out.String(), "tick") == n {
		if time.Now().After(deadline) {
			t.Fatal("a resumed task writes nothing")
		}
		time.Sleep(20 * time.Millisecond)
	}

	m, err := task.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	v, err := typeurl.UnmarshalAny(m.Data)
	if err != nil {
		t.Fatal(err)
	}
	switch mt := v.(type) {
	case *stats.Metrics:
		if mt.Pids == nil || mt.Pids.Current == 0 {
			t.Errorf("cgroup v1 metrics without pids: %+v", mt)
		}
	case *cgroupsv2.Metrics:
		if mt.Pids == nil || mt.Pids.Current == 0 {
			t.Errorf("cgroup v2 metrics without pids: %+v", mt)
		}
	default:
		t.Errorf("metrics of type %T", v)
	}

	if err := task.Kill(ctx, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, statusC, 10*time.Second)
	if _, err := task.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	topics.expect(t, []string{"/tasks/paused", "/tasks/resumed"}, 10*time.Second)
}

// TestTaskStdinAndUpdate: typed input reaches the task, CloseIO gives it
// EOF (cat then exits 0), and Update changes the container's cgroup.
func TestTaskStdinAndUpdate(t *testing.T) {
	d := daemon(t)
	ctx := testContext(t, d)
	c := newContainer(t, d, ctx, []string{"cat"})
	stdin, typed := io.Pipe()
	out := &syncBuffer{}
	task, statusC := startTask(t, ctx, c, streams(d, stdin, out, nil, false))

	limit := int64(123)
	if err := task.Update(ctx, client.WithResources(&specs.LinuxResources{Pids: &specs.LinuxPids{Limit: &limit}})); err != nil {
		t.Fatal(err)
	}
	spec, err := c.Spec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pidsMax := filepath.Join("/sys/fs/cgroup/pids", spec.Linux.CgroupsPath, "pids.max")
	if cgroups.Mode() == cgroups.Unified {
		pidsMax = filepath.Join("/sys/fs/cgroup", spec.Linux.CgroupsPath, "pids.max")
	}
	if data, err := os.ReadFile(pidsMax); err != nil || strings.TrimSpace(string(data)) != "123" {
		t.Errorf("after Update: %s is %q, %v; want 123", pidsMax, data, err)
	}

	typeLine(t, typed, "echoed by cat")
	waitOutput(t, out, "echoed by cat\n", 10*time.Second)
	typed.Close()
	if err := task.CloseIO(ctx, client.WithStdinCloser); err != nil {
		t.Fatal(err)
	}
	if st := waitStatus(t, statusC, 10*time.Second); st.ExitCode() != 0 {
		t.Errorf("cat after stdin EOF: exit %d, want 0", st.ExitCode())
	}
	if _, err := task.Delete(ctx); err != nil {
		t.Fatal(err)
	}
}

func typeLine(t *testing.T, w io.Writer, line string) {
	t.Helper()
	if _, err := io.WriteString(w, line+"\n"); err != nil {
		t.Fatalf("type %q: %v", line, err)
	}
}

// topicLog records the task event topics of one container.
type topicLog struct {
	mu     sync.Mutex
	topics []string
}

func watchEvents(t *testing.T, d *harness.Daemon, ctx context.Context, id string) *topicLog {
	t.Helper()
	l := &topicLog{}
	ectx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	ch, errs := d.Client.EventService().Subscribe(ectx)
	// The subscription is live once it carries an event of our own.
	marker := id + "-events-ready"
	ready := make(chan struct{})
	go func() {
		for {
			select {
			case e := <-ch:
				if e == nil {
					return
				}
				v, err := typeurl.UnmarshalAny(e.Event)
				if err != nil {
					continue
				}
				cid, ok := v.(interface{ GetContainerID() string })
				switch {
				case !ok:
				case cid.GetContainerID() == marker:
					select {
					case <-ready:
					default:
						close(ready)
					}
				case cid.GetContainerID() == id && strings.HasPrefix(e.Topic, "/tasks/"):
					l.mu.Lock()
					l.topics = append(l.topics, e.Topic)
					l.mu.Unlock()
				}
			case <-errs:
				return
			case <-ectx.Done():
				return
			}
		}
	}()
	deadline := time.After(10 * time.Second)
	for {
		if err := d.Client.EventService().Publish(ctx, "/ckpt-test/ready", &eventstypes.TaskOOM{ContainerID: marker}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-ready:
			return l
		case <-deadline:
			t.Fatal("event subscription not live after 10s")
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// expect waits until every topic in want was seen.
func (l *topicLog) expect(t *testing.T, want []string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		l.mu.Lock()
		seen := slices.Clone(l.topics)
		l.mu.Unlock()
		missing := slices.DeleteFunc(slices.Clone(want), func(w string) bool { return slices.Contains(seen, w) })
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("events %v never came (seen %v)", missing, seen)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
