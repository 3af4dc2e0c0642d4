package shim

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/pkg/stdio"
	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/types/known/anypb"
)

func TestRuntimeError(t *testing.T) {
	dir := t.TempDir()
	logFile := filepath.Join(dir, "log.json")
	os.WriteFile(logFile, []byte(`{"level":"warning","msg":"w"}
{"level":"error","msg":"first"}
{"level":"error","msg":"container_linux.go: starting container process caused: exec: \"nope\": not found"}
`), 0o600)
	err := runtimeError(&runc.Runc{Log: logFile}, errors.New("exit status 1"), "runc create")
	want := `runc create: container_linux.go: starting container process caused: exec: "nope": not found: exit status 1`
	if err.Error() != want {
		t.Fatalf("got %q\nwant %q", err, want)
	}
	if !notExist(errors.New("runc delete: container does not exist")) || notExist(errors.New("exit status 1")) {
		t.Fatal("notExist")
	}
}

// fakeService has what exit handling needs, and no runc.
func fakeService(t *testing.T) *service {
	s := &service{
		ctx: context.Background(), events: make(chan any, 64),
		ec: make(chan runc.Exit), running: map[int]*process{}, watches: map[*exitWatch]struct{}{},
		containers: map[string]*container{}, creating: map[string]struct{}{},
	}
	go s.processExits()
	t.Cleanup(func() { close(s.ec) })
	return s
}

// reap delivers an exit and returns once it is handled: processExits
// handles exits in order, and the channel is unbuffered.
func (s *service) reapForTest(e runc.Exit) {
	s.ec <- e
	s.ec <- runc.Exit{Pid: -1}
}

func fakeContainer() *container {
	c := &container{id: "c1", ownPidNS: true, execs: map[string]*process{}}
	c.init = newProcess(c, "", stdio.Stdio{})
	return c
}

func nextExit(t *testing.T, s *service) *eventstypes.TaskExit {
	t.Helper()
	for {
		select {
		case e := <-s.events:
			if x, ok := e.(*eventstypes.TaskExit); ok {
				return x
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no TaskExit")
		}
	}
}

// An exec that exits before the shim has registered its pid still gets
// its exit.
func TestExitBeforeStarted(t *testing.T) {
	s := fakeService(t)
	c := fakeContainer()
	p := newProcess(c, "e1", stdio.Stdio{})
	if !s.execStarting(c) {
		t.Fatal("execStarting refused")
	}
	w := s.watchExits(nil)
	s.reapForTest(runc.Exit{Pid: 4242, Status: 3, Timestamp: time.Now()})
	p.setPid(4242)
	p.setStatus(task.Status_RUNNING)
	s.started(p, w)
	if !p.hasExited() {
		t.Fatal("the early exit was lost")
	}
	if st, _ := p.exit(); st != 3 {
		t.Fatalf("exit status %d, want 3", st)
	}
	if e := nextExit(t, s); e.ID != "e1" || e.ExitStatus != 3 {
		t.Fatalf("event %+v", e)
	}
	s.lifecycleMu.Lock()
	defer s.lifecycleMu.Unlock()
	if len(s.running) != 0 || len(s.watches) != 0 || c.runningExecs != 0 {
		t.Fatalf("leftovers: running %v, watches %d, execs %d", s.running, len(s.watches), c.runningExecs)
	}
}

// The init's exit is published after the exits of the execs that were
// running, and no exec starts after it.
func TestInitExitLast(t *testing.T) {
	s := fakeService(t)
	c := fakeContainer()
	c.init.setPid(100)
	s.started(c.init, s.watchExits(nil))
	e := newProcess(c, "e1", stdio.Stdio{})
	s.execStarting(c)
	e.setPid(101)
	s.started(e, s.watchExits(nil))

	s.reapForTest(runc.Exit{Pid: 100, Status: 137})
	if c.init.hasExited() {
		t.Fatal("init exit published while an exec runs")
	}
	if s.execStarting(c) {
		t.Fatal("an exec may start after the init's exit")
	}
	s.reapForTest(runc.Exit{Pid: 101, Status: 137})
	if first := nextExit(t, s); first.ID != "e1" {
		t.Fatalf("first exit is %q's", first.ID)
	}
	if second := nextExit(t, s); second.ID != "c1" || !c.init.hasExited() {
		t.Fatalf("second exit %+v", second)
	}
}

func TestProcIO(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out.log")
	pio, err := newProcIO(context.Background(), stdio.Stdio{Stdout: "file://" + out}, os.Getuid(), os.Getgid(), "c1")
	if err != nil {
		t.Fatal(err)
	}
	if pio.stdio.Stderr != out || pio.pipes.child[1] == nil || pio.pipes.child[2] == nil || pio.pipes.child[0] != nil {
		t.Fatalf("file:// stdio: %+v", pio.stdio)
	}
	if err := pio.start(); err != nil {
		t.Fatal(err)
	}
	pio.pipes.child[1].WriteString("to stdout\n")
	pio.pipes.child[2].WriteString("to stderr\n")
	pio.pipes.CloseAfterStart()
	pio.wait()
	pio.close()
	data, _ := os.ReadFile(out)
	if string(data) != "to stdout\nto stderr\n" && string(data) != "to stderr\nto stdout\n" {
		t.Fatalf("file got %q", data)
	}

	if _, err := newProcIO(context.Background(), stdio.Stdio{Stdout: "tcp://127.0.0.1:1"}, 0, 0, "c1"); !errdefs.IsNotImplemented(err) {
		t.Fatalf("tcp:// stdio: %v; want not implemented", err)
	}
}

func TestCreateOptions(t *testing.T) {
	ctx := context.Background()
	if opts, err := createOptions(ctx, &taskAPI.CreateTaskRequest{}); err != nil || opts.Root != "" {
		t.Fatalf("none: %+v, %v", opts, err)
	}
	a, err := typeurl.MarshalAnyToProto(&options.Options{Root: "/r", IoUid: 7})
	if err != nil {
		t.Fatal(err)
	}
	if opts, err := createOptions(ctx, &taskAPI.CreateTaskRequest{Options: a}); err != nil || opts.Root != "/r" || opts.IoUid != 7 {
		t.Fatalf("runc options: %+v, %v", opts, err)
	}
	// Docker's options for a runtime other than runc; the type is not
	// even registered in the shim.
	foreign := &anypb.Any{TypeUrl: "types.docker.com/io.containerd.runtime.v1.linux.RuntimeOptions", Value: []byte{1, 2}}
	if opts, err := createOptions(ctx, &taskAPI.CreateTaskRequest{Options: foreign}); err != nil || opts.Root != "" {
		t.Fatalf("foreign options: %+v, %v; want ignored", opts, err)
	}
	if rc := runtimeConfigOf("ns1", &options.Options{}); rc.Root != "/run/containerd/ckpt/ns1" {
		t.Fatalf("runc root %s", rc.Root)
	}
}

func TestReadSpecFacts(t *testing.T) {
	tests := []struct {
		name string
		spec string
		want specFacts
	}{
		{"own pid namespace", `{"linux": {"namespaces": [{"type": "pid"}]}}`, specFacts{ownPidNS: true}},
		{"a pod's pid namespace", `{"linux": {"namespaces": [{"type": "pid", "path": "/proc/1/ns/pid"}]}}`, specFacts{}},
		{"made by the CRI plugin", `{"annotations": {"io.kubernetes.cri.container-type": "container"}, "linux": {}}`, specFacts{madeByCRI: true}},
	}
	for _, tt := range tests {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(tt.spec), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := readSpecFacts(dir)
		if err != nil || got != tt.want {
			t.Errorf("%s: %+v, %v; want %+v", tt.name, got, err, tt.want)
		}
	}
	if _, err := readSpecFacts(t.TempDir()); err == nil {
		t.Error("a bundle without config.json")
	}
}

type heldRestore struct{ pid int }

func (h heldRestore) Pid() int                       { return h.pid }
func (heldRestore) Finish(ctx context.Context) error { return nil }
func (heldRestore) Abort(ctx context.Context) error  { return nil }

// A held restore's pids are its root task's, without runc, which knows no
// container yet: containerd, reloading shims after a restart, kills a shim
// whose task lists none.
func TestPidsOfHeldRestore(t *testing.T) {
	s := fakeService(t)
	c := fakeContainer()
	// A runc that must not be run.
	c.runc = &runc.Runc{Command: "/nonexistent/runc"}
	c.restore = heldRestore{pid: 4242}
	s.containers = map[string]*container{c.id: c}
	resp, err := s.Pids(context.Background(), &taskAPI.PidsRequest{ID: c.id})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Processes) != 1 || resp.Processes[0].Pid != 4242 {
		t.Fatalf("pids of a held restore: %v, want [4242]", resp.Processes)
	}
	c.restore = nil
	if _, err := s.Pids(context.Background(), &taskAPI.PidsRequest{ID: c.id}); err == nil {
		t.Fatal("without a held restore Pids did not ask runc")
	}
}
