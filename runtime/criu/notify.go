package criu

import (
	"context"
	"fmt"
	"os"
)

// Stage is the name of a CRIU notification (an "action script" in CRIU's
// terms). The names are CRIU's own, from criu/action-scripts.c.
type Stage string

// Every notification CRIU 4.x sends. Order and meaning: see docs/DESIGN.md.
const (
	PreDump             Stage = "pre-dump"
	PostDump            Stage = "post-dump"
	PreRestore          Stage = "pre-restore"
	PostRestore         Stage = "post-restore"
	NetworkLock         Stage = "network-lock"
	NetworkUnlock       Stage = "network-unlock"
	SetupNamespaces     Stage = "setup-namespaces"
	PostSetupNamespaces Stage = "post-setup-namespaces"
	PreResume           Stage = "pre-resume"
	PostResume          Stage = "post-resume"
	OrphanPtsMaster     Stage = "orphan-pts-master"
	StatusReady         Stage = "status-ready"
	QueryExtFiles       Stage = "query-ext-files"
	PreStream           Stage = "pre-stream"
)

// Stages lists every stage ckpt knows, in no particular order.
var Stages = []Stage{
	PreDump, PostDump, PreRestore, PostRestore, NetworkLock, NetworkUnlock,
	SetupNamespaces, PostSetupNamespaces, PreResume, PostResume,
	OrphanPtsMaster, StatusReady, QueryExtFiles, PreStream,
}

// Notification is one message CRIU sent while working on a request. CRIU
// waits for the answer before it goes on, so a handler that blocks holds
// CRIU at that stage (restore is split across containerd's Create and Start
// that way).
type Notification struct {
	Stage Stage
	// Pid is the host pid of the root task, for the stages where CRIU sends
	// one (setup-namespaces, post-restore); 0 otherwise.
	Pid int

	files []*os.File
}

// Files returns the descriptors attached to the notification without taking
// them: they are closed once the handler returns.
func (n *Notification) Files() []*os.File { return n.files }

// TakeFiles hands the attached descriptors to the caller, who must close
// them; the session will not.
func (n *Notification) TakeFiles() []*os.File {
	f := n.files
	n.files = nil
	return f
}

// Answer is what a handler may send back besides success. Only
// query-ext-files uses it: CRIU adds External to its list of externals.
type Answer struct {
	External []string
}

// Handler answers CRIU's notifications. A nil error answers
// notify_success=true; an error answers false and CRIU aborts the request
// (except at pre-resume and post-resume, which CRIU only logs). Handlers are
// called one at a time, in CRIU's order, on the goroutine that called Do.
type Handler interface {
	Notify(ctx context.Context, n *Notification) (*Answer, error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, n *Notification) (*Answer, error)

func (f HandlerFunc) Notify(ctx context.Context, n *Notification) (*Answer, error) { return f(ctx, n) }

// Handlers is a Handler with one typed field per stage. A nil field
// acknowledges its stage, except OrphanPtsMaster: a pty master that nobody
// takes would leave the restored terminal dead, so it is refused loudly.
type Handlers struct {
	// Any runs first for every notification (action scripts, tracing). An
	// error from it answers false without calling the typed handler.
	Any func(ctx context.Context, n *Notification) error

	PreDump             func(ctx context.Context) error
	PostDump            func(ctx context.Context) error
	NetworkLock         func(ctx context.Context) error
	NetworkUnlock       func(ctx context.Context) error
	PreRestore          func(ctx context.Context) error
	SetupNamespaces     func(ctx context.Context, pid int) error
	PostSetupNamespaces func(ctx context.Context) error
	PostRestore         func(ctx context.Context, pid int) error
	PreResume           func(ctx context.Context) error
	PostResume          func(ctx context.Context) error
	StatusReady         func(ctx context.Context) error
	PreStream           func(ctx context.Context) error
	// OrphanPtsMaster receives the master of a restored pty and owns it.
	OrphanPtsMaster func(ctx context.Context, master *os.File) error
	// QueryExtFiles may return external files for CRIU to add.
	QueryExtFiles func(ctx context.Context) ([]string, error)
	// Unknown gets stages this version of ckpt does not know.
	Unknown func(ctx context.Context, n *Notification) error
}

// Notify implements Handler.
func (h *Handlers) Notify(ctx context.Context, n *Notification) (*Answer, error) {
	if h.Any != nil {
		if err := h.Any(ctx, n); err != nil {
			return nil, err
		}
	}
	call := func(f func(context.Context) error) (*Answer, error) {
		if f == nil {
			return nil, nil
		}
		return nil, f(ctx)
	}
	switch n.Stage {
	case PreDump:
		return call(h.PreDump)
	case PostDump:
		return call(h.PostDump)
	case NetworkLock:
		return call(h.NetworkLock)
	case NetworkUnlock:
		return call(h.NetworkUnlock)
	case PreRestore:
		return call(h.PreRestore)
	case PostSetupNamespaces:
		return call(h.PostSetupNamespaces)
	case PreResume:
		return call(h.PreResume)
	case PostResume:
		return call(h.PostResume)
	case StatusReady:
		return call(h.StatusReady)
	case PreStream:
		return call(h.PreStream)
	case SetupNamespaces:
		if h.SetupNamespaces == nil {
			return nil, nil
		}
		return nil, h.SetupNamespaces(ctx, n.Pid)
	case PostRestore:
		if h.PostRestore == nil {
			return nil, nil
		}
		return nil, h.PostRestore(ctx, n.Pid)
	case QueryExtFiles:
		if h.QueryExtFiles == nil {
			return nil, nil
		}
		ext, err := h.QueryExtFiles(ctx)
		if err != nil || len(ext) == 0 {
			return nil, err
		}
		return &Answer{External: ext}, nil
	case OrphanPtsMaster:
		files := n.TakeFiles()
		if len(files) != 1 {
			closeAll(files)
			return nil, fmt.Errorf("orphan-pts-master carried %d descriptors, want exactly 1", len(files))
		}
		if h.OrphanPtsMaster == nil {
			files[0].Close()
			return nil, fmt.Errorf("orphan-pts-master: no console is set up to take the restored pty master")
		}
		return nil, h.OrphanPtsMaster(ctx, files[0])
	default:
		if h.Unknown == nil {
			return nil, nil
		}
		return nil, h.Unknown(ctx, n)
	}
}
