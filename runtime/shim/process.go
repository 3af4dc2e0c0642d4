package shim

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/ckpt-dev/ckpt/runtime/image"
	"github.com/ckpt-dev/ckpt/runtime/policy"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/pkg/stdio"
	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	"github.com/creack/pty"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// container is one task: its init process, its execs and how to reach runc.
type container struct {
	id, bundle string
	// rootfs is the mounted rootfs ("" when containerd sent no mounts).
	rootfs string
	runc   *runc.Runc
	// ownPidNS: the kernel kills every process when the init dies, so the
	// shim need not.
	ownPidNS bool
	// madeByCRI: containerd's CRI plugin writes into the rootfs between a
	// restore's Create and Start (RestoreRequest.RootfsLate).
	madeByCRI bool
	ioUID     int
	ioGID     int
	init      *process
	// criuWork is the restore's CRIU work dir (its log is kept).
	criuWork string
	// ctrdCheckpoint is the temp dir containerd unpacked the restore's
	// checkpoint into, removed once CRIU is done (ctrdtemp.go); guarded
	// by emu.
	ctrdCheckpoint string

	// mu serializes the init's lifecycle calls (Start, Delete, Pause,
	// Resume, Checkpoint); Kill and the queries do not wait for it.
	mu sync.Mutex

	// next makes the next checkpoint a lazy dump (a task Update set it);
	// guarded by mu.
	next *policy.Lazy

	// emu guards execs, restore and transfer.
	emu     sync.Mutex
	execs   map[string]*process
	restore Restore // a restore held in CRIU between Create and Start
	// transfer is a lazy checkpoint serving the memory of the frozen
	// container, from its status-ready until the end of the transfer.
	transfer *transfer

	// Guarded by the service's lifecycleMu (see exits.go).
	runningExecs int
	initExited   bool
	initExit     *runc.Exit // held until the last exec's exit is published
}

// process is the init or an exec.
type process struct {
	c     *container
	id    string // exec id; "" for the init
	stdio stdio.Stdio
	spec  *specs.Process // exec only
	io    *procIO

	mu         sync.Mutex
	pid        int
	status     task.Status
	exitStatus int
	exitedAt   time.Time
	exited     chan struct{}
}

func newProcess(c *container, id string, sio stdio.Stdio) *process {
	return &process{c: c, id: id, stdio: sio, status: task.Status_CREATED, exited: make(chan struct{})}
}

func (p *process) isInit() bool { return p.id == "" }

func (p *process) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pid
}

func (p *process) Status() task.Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status
}

func (p *process) setPid(pid int) {
	p.mu.Lock()
	p.pid = pid
	p.mu.Unlock()
}

// setStatus changes the status unless the process has exited: an exit is
// final whatever a racing call thinks.
func (p *process) setStatus(s task.Status) {
	p.mu.Lock()
	if p.status != task.Status_STOPPED {
		p.status = s
	}
	p.mu.Unlock()
}

// setExited records the exit once.
func (p *process) setExited(status int, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.status == task.Status_STOPPED {
		return
	}
	p.status = task.Status_STOPPED
	p.exitStatus = status
	p.exitedAt = at
	close(p.exited)
}

func (p *process) exit() (int, time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exitStatus, p.exitedAt
}

func (p *process) hasExited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// wait returns after the exit, once the output is copied: a client that
// reads stdout after Wait then has all of it.
func (p *process) wait(ctx context.Context) error {
	select {
	case <-p.exited:
	case <-ctx.Done():
		return ctx.Err()
	}
	if p.io == nil {
		return nil
	}
	done := make(chan struct{})
	go func() {
		p.io.wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// resize applies ResizePty; a size asked for before the pty master has
// arrived is applied when it does.
func (p *process) resize(ws pty.Winsize) error {
	if p.io == nil || p.io.console == nil {
		return fmt.Errorf("process has no terminal: %w", errdefs.ErrFailedPrecondition)
	}
	return p.io.console.Resize(ws)
}

// windowSize is the terminal's current size, for a checkpoint; nil
// without a terminal. image.WindowSize is the one type that crosses to
// runtime/container: it is what ckpt.json records, characters only
// (pixel sizes are not restored), and it keeps creack/pty, a console
// concern, out of runtime/container.
func (p *process) windowSize() *image.WindowSize {
	if p.io == nil || p.io.console == nil {
		return nil
	}
	ws, err := p.io.console.Size()
	if err != nil {
		return nil
	}
	return &image.WindowSize{Rows: ws.Rows, Cols: ws.Cols}
}

func (c *container) exec(id string) *process {
	c.emu.Lock()
	defer c.emu.Unlock()
	return c.execs[id]
}

// process is the init for "", else the exec.
func (c *container) process(execID string) *process {
	if execID == "" {
		return c.init
	}
	return c.exec(execID)
}
