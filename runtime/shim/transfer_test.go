package shim

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/ckpt-dev/ckpt/runtime/policy"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
)

// fakeTransfer is a lazy dump serving pages until the test ends it.
type fakeTransfer struct {
	done    chan struct{}
	once    sync.Once
	mu      sync.Mutex
	aborted bool
	err     error
}

func (f *fakeTransfer) Done() <-chan struct{} { return f.done }
func (f *fakeTransfer) end(err error) {
	f.once.Do(func() {
		f.mu.Lock()
		f.err = err
		f.mu.Unlock()
		close(f.done)
	})
}
func (f *fakeTransfer) Wait(ctx context.Context) error {
	<-f.done
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}
func (f *fakeTransfer) Abort(ctx context.Context) error {
	f.mu.Lock()
	f.aborted = true
	f.mu.Unlock()
	f.end(errors.New("aborted"))
	return nil
}

// A task Update's annotations make the next checkpoint, and only that one,
// lazy; another Update aborts the transfer; mistakes are refused.
func TestLazyCheckpointThroughUpdate(t *testing.T) {
	ctx := context.Background()
	s := fakeService(t)
	s.ns, s.containers = "test", map[string]*container{}
	e := &fakeEngine{s: s}
	s.engine = e
	bundle, opts, _ := restoreBundle(t)
	if _, err := s.Create(ctx, createRestoreRequest(t, bundle, opts)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Start(ctx, &taskAPI.StartRequest{ID: "c1"}); err != nil {
		t.Fatal(err)
	}
	update := func(a map[string]string) error {
		_, err := s.Update(ctx, &taskAPI.UpdateTaskRequest{ID: "c1", Annotations: a})
		return errgrpc.ToNative(err)
	}
	checkpoint := func() error {
		_, err := s.Checkpoint(ctx, &taskAPI.CheckpointTaskRequest{ID: "c1", Path: t.TempDir()})
		return errgrpc.ToNative(err)
	}

	if err := update(map[string]string{policy.NextCheckpointPrefix + "page-sever": "h:1"}); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("misspelt annotation: %v, want invalid argument", err)
	}
	if err := update(map[string]string{policy.TransferAnnotation: policy.TransferAbort}); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("abort without a transfer: %v, want failed precondition", err)
	}
	lazy := policy.Lazy{PageServer: "10.0.0.1:27027"}
	if err := update(lazy.Annotations()); err != nil {
		t.Fatal(err)
	}
	if err := checkpoint(); err != nil {
		t.Fatal(err)
	}
	if got := e.checkpoints[len(e.checkpoints)-1]; !got.LazyPages || got.PageServer != lazy.PageServer || got.LeaveRunning {
		t.Fatalf("checkpoint options %+v, want lazy from %s, exit", got, lazy.PageServer)
	}
	if err := checkpoint(); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("second checkpoint while the transfer runs: %v", err)
	}
	tr := e.transfer
	if err := update(map[string]string{policy.TransferAnnotation: policy.TransferAbort}); err != nil {
		t.Fatal(err)
	}
	tr.mu.Lock()
	aborted := tr.aborted
	tr.mu.Unlock()
	if !aborted {
		t.Fatal("the transfer was not aborted")
	}
	<-tr.Done()
	// The Update was for one checkpoint: the next is a full dump.
	n := len(e.checkpoints)
	if err := checkpoint(); err != nil {
		t.Fatal(err)
	}
	if len(e.checkpoints) != n+1 || e.checkpoints[n].LazyPages {
		t.Fatalf("checkpoint after the lazy one: %+v", e.checkpoints[n:])
	}
}
