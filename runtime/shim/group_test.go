package shim

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/shutdown"
	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
)

func TestShimGroup(t *testing.T) {
	tests := []struct {
		name   string
		config string // "" writes no config.json
		want   string
		err    bool
	}{
		{name: "pod container", config: `{"annotations":{"` + SandboxIDAnnotation + `":"pod1","io.kubernetes.cri.container-type":"container"}}`, want: "pod1"},
		{name: "sandbox", config: `{"annotations":{"` + SandboxIDAnnotation + `":"c1"}}`, want: "c1"},
		{name: "no pod", config: `{"annotations":{"other":"x"}}`, want: "c1"},
		{name: "runc's group", config: `{"annotations":{"` + GroupAnnotation + `":"g1"}}`, want: "g1"},
		{name: "runc's group before the pod", config: `{"annotations":{"` + GroupAnnotation + `":"g1","` + SandboxIDAnnotation + `":"pod1"}}`, want: "g1"},
		{name: "no annotations", config: `{}`, want: "c1"},
		{name: "empty sandbox id", config: `{"annotations":{"` + SandboxIDAnnotation + `":""}}`, want: "c1"},
		{name: "no config.json", err: true},
		{name: "bad config.json", config: `{"annotations":`, err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.config != "" {
				if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(tt.config), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			got, err := shimGroup("c1", dir)
			if tt.err {
				if err == nil {
					t.Fatalf("shimGroup = %q, want an error", got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("shimGroup = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

// fakeShutdown records whether the shim was asked to end.
type fakeShutdown struct{ called bool }

func (f *fakeShutdown) Shutdown()                                    { f.called = true }
func (f *fakeShutdown) RegisterCallback(func(context.Context) error) {}
func (f *fakeShutdown) Done() <-chan struct{}                        { return nil }
func (f *fakeShutdown) Err() error                                   { return nil }

var _ shutdown.Service = (*fakeShutdown)(nil)

// The shim of a pod ends with its last container, not under a Create.
func TestShutdownWithOtherContainers(t *testing.T) {
	tests := []struct {
		name       string
		containers []string
		creating   []string
		want       bool
	}{
		{name: "none", want: true},
		{name: "one left", containers: []string{"app"}},
		{name: "one being created", creating: []string{"app"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sd := &fakeShutdown{}
			s := &service{sd: sd, containers: map[string]*container{}, creating: map[string]struct{}{}}
			for _, id := range tt.containers {
				s.containers[id] = &container{id: id}
			}
			for _, id := range tt.creating {
				s.creating[id] = struct{}{}
			}
			if _, err := s.Shutdown(context.Background(), nil); err != nil {
				t.Fatal(err)
			}
			if sd.called != tt.want {
				t.Fatalf("shutdown called: %v, want %v", sd.called, tt.want)
			}
		})
	}
}

func TestReserve(t *testing.T) {
	s := &service{containers: map[string]*container{}, creating: map[string]struct{}{}}
	if err := s.reserve("a"); err != nil {
		t.Fatal(err)
	}
	if err := s.reserve("a"); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("second Create of a while the first runs: %v, want already exists", err)
	}
	if err := s.reserve("b"); err != nil {
		t.Fatalf("another container of the pod: %v", err)
	}
	s.release("a", nil) // a's Create failed
	if err := s.reserve("a"); err != nil {
		t.Fatalf("Create again after a failed one: %v", err)
	}
	s.release("a", &container{id: "a"})
	if err := s.reserve("a"); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("Create of an existing container: %v, want already exists", err)
	}
	s.release("b", nil)
	if len(s.creating) != 0 || len(s.containers) != 1 {
		t.Fatalf("creating %v, containers %v", s.creating, s.containers)
	}
}

// Exits of several containers' inits in one shim each end their own
// container, with their own event.
func TestExitsOfTwoContainers(t *testing.T) {
	s := fakeService(t)
	a, b := fakeContainer(), fakeContainer()
	a.id, b.id = "a", "b"
	for i, c := range []*container{a, b} {
		w := s.watchExits(nil)
		c.init.setPid(5000 + i)
		s.started(c.init, w)
	}
	s.reapForTest(runc.Exit{Pid: 5001, Status: 137, Timestamp: time.Now()})
	if e := nextExit(t, s); e.ContainerID != "b" || e.ID != "b" || e.ExitStatus != 137 {
		t.Fatalf("event %+v, want b's exit", e)
	}
	if a.init.hasExited() || !b.init.hasExited() {
		t.Fatalf("a exited %v, b exited %v; want only b", a.init.hasExited(), b.init.hasExited())
	}
	s.reapForTest(runc.Exit{Pid: 5000, Status: 0, Timestamp: time.Now()})
	if e := nextExit(t, s); e.ContainerID != "a" || e.ExitStatus != 0 {
		t.Fatalf("event %+v, want a's exit", e)
	}
}
