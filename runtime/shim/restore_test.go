package shim

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	rcontainer "github.com/ckpt-dev/ckpt/runtime/container"
	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/typeurl/v2"
	"github.com/creack/pty"
)

// fakeEngine stands in for runtime/container: StartRestore hands out a
// fakeRestore, or fails with startErr. Checkpoint, Pause and Resume are
// not part of the restore lifecycle.
type fakeEngine struct {
	s        *service
	startErr error
	// finishErr fails Finish as CRIU would: the tree is killed first.
	finishErr error

	mu          sync.Mutex
	opts        []rcontainer.RestoreOptions
	restores    []*fakeRestore
	checkpoints []rcontainer.CheckpointOptions
	transfer    *fakeTransfer
}

func (e *fakeEngine) Checkpoint(_ context.Context, opts rcontainer.CheckpointOptions) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.checkpoints = append(e.checkpoints, opts)
	return nil
}

func (e *fakeEngine) StartCheckpoint(_ context.Context, opts rcontainer.CheckpointOptions) (Transfer, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.checkpoints = append(e.checkpoints, opts)
	e.transfer = &fakeTransfer{done: make(chan struct{})}
	return e.transfer, nil
}
func (e *fakeEngine) Pause(context.Context, string, string) error          { return errdefs.ErrNotImplemented }
func (e *fakeEngine) Resume(context.Context, string, string) error         { return errdefs.ErrNotImplemented }
func (e *fakeEngine) RemoveLeftover(context.Context, string, string) error { return nil }

func (e *fakeEngine) StartRestore(ctx context.Context, opts rcontainer.RestoreOptions) (Restore, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.opts = append(e.opts, opts)
	if e.startErr != nil {
		// CRIU's log is in the work dir; the shim keeps it in the bundle.
		os.MkdirAll(opts.WorkPath, 0o700)
		os.WriteFile(filepath.Join(opts.WorkPath, "restore.log"), []byte("Error (criu): no\n"), 0o600)
		return nil, e.startErr
	}
	r := &fakeRestore{s: e.s, pid: 4000 + len(e.restores), finishErr: e.finishErr}
	e.restores = append(e.restores, r)
	return r, nil
}

// fakeRestore records what the shim asked of the held CRIU. Abort and a
// failing Finish kill the tree, whose init then exits (SIGKILL), as CRIU's
// would.
type fakeRestore struct {
	s         *service
	pid       int
	finishErr error

	mu                sync.Mutex
	finished, aborted int
}

func (r *fakeRestore) Pid() int { return r.pid }

func (r *fakeRestore) Finish(ctx context.Context) error {
	r.mu.Lock()
	r.finished++
	r.mu.Unlock()
	if r.finishErr != nil {
		r.s.reapForTest(runc.Exit{Pid: r.pid, Status: 137})
	}
	return r.finishErr
}

func (r *fakeRestore) Abort(ctx context.Context) error {
	r.mu.Lock()
	r.aborted++
	r.mu.Unlock()
	r.s.reapForTest(runc.Exit{Pid: r.pid, Status: 137})
	return nil
}

func (r *fakeRestore) calls() (finished, aborted int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.finished, r.aborted
}

// restoreBundle is a bundle with a config.json, and a runc that records
// its arguments and succeeds: Delete of a created task runs `runc delete`.
func restoreBundle(t *testing.T) (bundle string, createOpts *options.Options, runcLog string) {
	t.Helper()
	dir := t.TempDir()
	bundle = filepath.Join(dir, "bundle")
	if err := os.Mkdir(bundle, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), []byte(`{"ociVersion":"1.2.0","linux":{"namespaces":[{"type":"pid"}]}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	runcLog = filepath.Join(dir, "runc.args")
	fakeRunc := filepath.Join(dir, "runc")
	if err := os.WriteFile(fakeRunc, []byte("#!/bin/sh\necho \"$@\" >> "+runcLog+"\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	return bundle, &options.Options{BinaryName: fakeRunc, Root: filepath.Join(dir, "root")}, runcLog
}

func createRestoreRequest(t *testing.T, bundle string, opts *options.Options) *taskAPI.CreateTaskRequest {
	t.Helper()
	a, err := typeurl.MarshalAnyToProto(opts)
	if err != nil {
		t.Fatal(err)
	}
	return &taskAPI.CreateTaskRequest{ID: "c1", Bundle: bundle, Checkpoint: "/checkpoint", Options: a}
}

func nextEvent[T any](t *testing.T, s *service) T {
	t.Helper()
	for {
		select {
		case e := <-s.events:
			if x, ok := e.(T); ok {
				return x
			}
		default:
			var zero T
			t.Fatalf("no %T event", zero)
			return zero
		}
	}
}

// The restore's split over containerd's calls: Create starts CRIU and
// returns the restored pid with CRIU held; Start lets it finish; Kill or
// Delete before Start abort it; an engine failure fails the call with its
// class and leaves no task.
func TestRestoreLifecycle(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		// after Create: what the client does next.
		next      func(t *testing.T, s *service) error
		startErr  error
		finishErr error
		// want: the call's error class (nil: success), Finish and Abort
		// calls, the task's status afterwards ("" = deleted), and whether
		// runc delete ran.
		wantErr             func(error) bool
		finished, aborted   int
		status              task.Status
		wantDeleted, wantRD bool
	}{
		{
			name: "create holds, start finishes",
			next: func(t *testing.T, s *service) error {
				resp, err := s.Start(ctx, &taskAPI.StartRequest{ID: "c1"})
				if err == nil && resp.Pid != 4000 {
					t.Errorf("Start pid %d, want 4000", resp.Pid)
				}
				if err == nil {
					if e := nextEvent[*eventstypes.TaskStart](t, s); e.Pid != 4000 {
						t.Errorf("TaskStart %+v", e)
					}
				}
				return err
			},
			finished: 1, status: task.Status_RUNNING,
		},
		{
			name: "kill before start aborts",
			next: func(t *testing.T, s *service) error {
				_, err := s.Kill(ctx, &taskAPI.KillRequest{ID: "c1", Signal: 9})
				if err == nil {
					if e := nextEvent[*eventstypes.TaskExit](t, s); e.ExitStatus != 137 {
						t.Errorf("TaskExit %+v", e)
					}
				}
				return err
			},
			aborted: 1, status: task.Status_STOPPED,
		},
		{
			name: "delete before start aborts and deletes",
			next: func(t *testing.T, s *service) error {
				resp, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: "c1"})
				if err == nil && (resp.Pid != 4000 || resp.ExitStatus != 137) {
					t.Errorf("Delete %+v", resp)
				}
				return err
			},
			aborted: 1, wantDeleted: true, wantRD: true,
		},
		{
			name:     "failing engine keeps its class",
			startErr: errors.Join(errors.New("criu: boom"), errdefs.ErrFailedPrecondition),
			wantErr:  errdefs.IsFailedPrecondition,
		},
		{
			name:      "failing finish stops the task",
			finishErr: errors.New("criu: restore failed at post-restore"),
			next: func(t *testing.T, s *service) error {
				_, err := s.Start(ctx, &taskAPI.StartRequest{ID: "c1"})
				if err == nil || !strings.Contains(err.Error(), "post-restore") {
					t.Errorf("Start: %v, want CRIU's error", err)
				}
				return nil
			},
			finished: 1, status: task.Status_STOPPED,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := fakeService(t)
			s.ns, s.containers = "test", map[string]*container{}
			e := &fakeEngine{s: s, startErr: tt.startErr, finishErr: tt.finishErr}
			s.engine = e
			bundle, opts, runcLog := restoreBundle(t)
			resp, err := s.Create(ctx, createRestoreRequest(t, bundle, opts))
			if tt.startErr != nil {
				err = errgrpc.ToNative(err)
				if !tt.wantErr(err) {
					t.Fatalf("Create: %v", err)
				}
				if _, err := s.container("c1"); err == nil {
					t.Error("a failed restore left a task")
				}
				if _, err := os.Stat(filepath.Join(bundle, "criu-restore.log")); err != nil {
					t.Errorf("CRIU's log not kept in the bundle: %v", err)
				}
				s.lifecycleMu.Lock()
				defer s.lifecycleMu.Unlock()
				if len(s.running) != 0 || len(s.watches) != 0 {
					t.Errorf("leftovers: running %v, watches %d", s.running, len(s.watches))
				}
				return
			}
			if err != nil {
				t.Fatalf("Create: %v", err)
			}
			if resp.Pid != 4000 {
				t.Fatalf("Create pid %d, want the restored init's 4000", resp.Pid)
			}
			got := e.opts[0]
			if got.ID != "c1" || got.Bundle != bundle || got.ImagePath != "/checkpoint" || got.WorkPath != filepath.Join(bundle, "criu-work") ||
				got.Root != filepath.Join(opts.Root, s.ns) || got.Runc != opts.BinaryName || got.Console != nil || got.RootfsLate {
				t.Errorf("restore options %+v", got)
			}
			if f, a := e.restores[0].calls(); f != 0 || a != 0 {
				t.Fatalf("CRIU released at Create: finished %d, aborted %d", f, a)
			}
			if st := s.containers["c1"].init.Status(); st != task.Status_CREATED {
				t.Fatalf("after Create: %s", st)
			}
			if err := tt.next(t, s); err != nil {
				t.Fatalf("%v", err)
			}
			if f, a := e.restores[0].calls(); f != tt.finished || a != tt.aborted {
				t.Errorf("finished %d, aborted %d; want %d, %d", f, a, tt.finished, tt.aborted)
			}
			c, err := s.container("c1")
			switch {
			case tt.wantDeleted && err == nil:
				t.Error("the task is still there")
			case !tt.wantDeleted && err != nil:
				t.Errorf("the task is gone: %v", err)
			case !tt.wantDeleted:
				if st := c.init.Status(); st != tt.status {
					t.Errorf("status %s, want %s", st, tt.status)
				}
				// A second Start or Kill finds no held restore.
				if c.takeRestore() != nil {
					t.Error("the restore is still held")
				}
			}
			args, _ := os.ReadFile(runcLog)
			if ran := strings.Contains(string(args), "delete"); ran != tt.wantRD {
				t.Errorf("runc ran %q; want delete %v", args, tt.wantRD)
			}
		})
	}
}

// A terminal restore: the engine gets a Console, and what
// runtime/container hands it (the init's master, another session's)
// ends on the task's console or closed.
func TestRestoreTerminalConsole(t *testing.T) {
	ctx := context.Background()
	s := fakeService(t)
	s.ns, s.containers = "test", map[string]*container{}
	e := &fakeEngine{s: s}
	s.engine = e
	bundle, opts, _ := restoreBundle(t)
	req := createRestoreRequest(t, bundle, opts)
	req.Terminal = true
	if _, err := s.Create(ctx, req); err != nil {
		t.Fatal(err)
	}
	console := e.opts[0].Console
	if console == nil {
		t.Fatal("a terminal restore without a Console")
	}
	var masters, slaves [2]*os.File
	for i := range masters {
		m, sl, err := pty.Open()
		if err != nil {
			t.Fatal(err)
		}
		masters[i], slaves[i] = m, sl
		defer sl.Close()
	}
	if err := console(masters[0], false); err != nil {
		t.Fatalf("another session's master: %v", err)
	}
	if err := console(masters[1], true); err != nil {
		t.Fatalf("the init's master: %v", err)
	}
	if _, err := s.Start(ctx, &taskAPI.StartRequest{ID: "c1"}); err != nil {
		t.Fatal(err)
	}
	c, _ := s.container("c1")
	if m := c.init.io.console.Master(); m == nil || m.String() != slaves[1].Name() {
		t.Fatalf("the task's console holds %v, want %s", m, slaves[1].Name())
	}
	if _, err := slaves[0].Write([]byte("x")); err == nil {
		t.Error("the other session's terminal still has its master")
	}
	c.init.io.close()
}
