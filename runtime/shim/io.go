package shim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/containerd/containerd/v2/pkg/stdio"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
)

// procIO connects a process's stdio to what containerd gave: FIFOs (or a
// file:// URI) for stdin, stdout and stderr. A process without a terminal
// gets pipes, which the shim copies; a terminal process gets a pty master
// (see attachConsole).
type procIO struct {
	stdio stdio.Stdio
	pipes *pipes // nil with a terminal or without stdio

	mu        sync.Mutex
	stdinHold *os.File // a write end of the stdin FIFO, so reads see no EOF until CloseIO
	closers   []io.Closer
	outputs   sync.WaitGroup // stdout and stderr copies
}

// newProcIO makes the pipes for a process; uid and gid own their container
// ends (containerd's IoUid/IoGid for user namespaces).
func newProcIO(sio stdio.Stdio, uid, gid int) (*procIO, error) {
	p := &procIO{stdio: sio}
	if sio.Terminal || sio.IsNull() {
		return p, nil
	}
	if sio.Stdout != "" {
		u, err := url.Parse(sio.Stdout)
		if err != nil {
			return nil, fmt.Errorf("stdout uri %q: %w", sio.Stdout, errdefs.ErrInvalidArgument)
		}
		switch u.Scheme {
		case "", "fifo":
		case "file":
			// One file takes both streams, as the runc shim does.
			p.stdio.Stdout, p.stdio.Stderr = u.Path, u.Path
		default:
			return nil, fmt.Errorf("stdio scheme %q (only FIFOs and file:// are supported): %w", u.Scheme, errdefs.ErrNotImplemented)
		}
	}
	pp, err := newPipes(p.stdio.Stdin != "", p.stdio.Stdout != "", p.stdio.Stderr != "", uid, gid)
	if err != nil {
		return nil, err
	}
	p.pipes = pp
	return p, nil
}

// childFiles are the container's ends of the pipes (nil entries: none).
func (p *procIO) childFiles() [3]*os.File {
	if p.pipes == nil {
		return [3]*os.File{}
	}
	return p.pipes.child
}

// start copies between the pipes and containerd's FIFOs. It returns once
// every FIFO is open, so that early output is not lost.
func (p *procIO) start(ctx context.Context) error {
	if p.pipes == nil {
		return nil
	}
	var shared *sharedWriter
	if p.stdio.Stdout != "" && p.stdio.Stdout == p.stdio.Stderr && p.pipes.parent[1] != nil && p.pipes.parent[2] != nil {
		out, err := p.openOutput(p.stdio.Stdout)
		if err != nil {
			return err
		}
		shared = &sharedWriter{WriteCloser: out, refs: 2}
	}
	for i, path := range []string{p.stdio.Stdout, p.stdio.Stderr} {
		src := p.pipes.parent[i+1]
		if src == nil || path == "" {
			continue
		}
		if shared != nil {
			p.copyOut(ctx, shared, src)
			continue
		}
		out, err := p.openOutput(path)
		if err != nil {
			return err
		}
		p.copyOut(ctx, out, src)
	}
	if p.stdio.Stdin != "" && p.pipes.parent[0] != nil {
		in, err := p.openStdin(p.stdio.Stdin)
		if err != nil {
			return err
		}
		go copyIn(ctx, p.pipes.parent[0], in)
	}
	return nil
}

// attachConsole copies between a pty master and containerd's FIFOs. The
// master's output goes to stdout (a terminal has no separate stderr).
func (p *procIO) attachConsole(ctx context.Context, master *os.File) error {
	p.mu.Lock()
	p.closers = append(p.closers, master)
	p.mu.Unlock()
	if p.stdio.Stdout != "" {
		out, err := p.openOutput(p.stdio.Stdout)
		if err != nil {
			return err
		}
		p.copyOut(ctx, out, ptyReader{master})
	}
	if p.stdio.Stdin != "" {
		in, err := p.openStdin(p.stdio.Stdin)
		if err != nil {
			return err
		}
		// The master stays open for output: copyIn must not close it.
		go copyIn(ctx, nopCloser{master}, in)
	}
	return nil
}

func (p *procIO) copyOut(ctx context.Context, w io.WriteCloser, r io.Reader) {
	p.outputs.Add(1)
	go func() {
		defer p.outputs.Done()
		if _, err := io.Copy(w, r); err != nil && !errors.Is(err, os.ErrClosed) {
			log.G(ctx).WithError(err).Warn("copy of process output")
		}
		w.Close()
	}()
}

// copyIn copies stdin until EOF, then closes the process's end so that it
// sees EOF too.
func copyIn(ctx context.Context, w io.WriteCloser, r *os.File) {
	if _, err := io.Copy(w, r); err != nil && !errors.Is(err, os.ErrClosed) && !errors.Is(err, syscall.EPIPE) {
		log.G(ctx).WithError(err).Debug("copy of process input")
	}
	w.Close()
	r.Close()
}

// openOutput opens a stdout/stderr destination. For a FIFO the shim also
// holds a read end, as the runc shim does: a client that detaches then
// costs the process a full pipe rather than EPIPE, and the open never
// blocks.
func (p *procIO) openOutput(path string) (io.WriteCloser, error) {
	fi, err := os.Stat(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if err == nil && fi.Mode()&os.ModeNamedPipe != 0 {
		r, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			return nil, fmt.Errorf("open output fifo %s: %w", path, err)
		}
		w, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			r.Close()
			return nil, fmt.Errorf("open output fifo %s: %w", path, err)
		}
		p.addCloser(r)
		return w, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	return os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
}

// openStdin opens the stdin FIFO for reading, plus a write end that keeps
// reads from seeing EOF before the client has connected; CloseIO drops it.
func (p *procIO) openStdin(path string) (*os.File, error) {
	r, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open stdin fifo %s: %w", path, err)
	}
	w, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("open stdin fifo %s: %w", path, err)
	}
	p.mu.Lock()
	p.stdinHold = w
	p.closers = append(p.closers, r)
	p.mu.Unlock()
	return r, nil
}

// closeStdin is CloseIO: once the client closes its end too, the process
// reads EOF.
func (p *procIO) closeStdin() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stdinHold != nil {
		p.stdinHold.Close()
		p.stdinHold = nil
	}
}

func (p *procIO) addCloser(c io.Closer) {
	p.mu.Lock()
	p.closers = append(p.closers, c)
	p.mu.Unlock()
}

// wait returns when the process's output has been copied.
func (p *procIO) wait() { p.outputs.Wait() }

// close releases everything; output copies end.
func (p *procIO) close() {
	p.closeStdin()
	p.mu.Lock()
	closers := p.closers
	p.closers = nil
	p.mu.Unlock()
	for _, c := range closers {
		c.Close()
	}
	if p.pipes != nil {
		p.pipes.Close()
	}
}

// pipes are a process's stdio pipes; child ends go to runc (or CRIU),
// parent ends stay in the shim. They implement go-runc's IO.
type pipes struct {
	child  [3]*os.File
	parent [3]*os.File
}

func newPipes(in, out, errOut bool, uid, gid int) (_ *pipes, err error) {
	p := &pipes{}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	for i, want := range []bool{in, out, errOut} {
		if !want {
			continue
		}
		r, w, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		if i == 0 {
			p.child[0], p.parent[0] = r, w
		} else {
			p.child[i], p.parent[i] = w, r
		}
		if err := p.child[i].Chown(uid, gid); err != nil {
			return nil, fmt.Errorf("chown stdio pipe: %w", err)
		}
	}
	return p, nil
}

func (p *pipes) Stdin() io.WriteCloser {
	if p.parent[0] == nil {
		return nil
	}
	return p.parent[0]
}

func (p *pipes) Stdout() io.ReadCloser {
	if p.parent[1] == nil {
		return nil
	}
	return p.parent[1]
}

func (p *pipes) Stderr() io.ReadCloser {
	if p.parent[2] == nil {
		return nil
	}
	return p.parent[2]
}

// Set hands the child ends to runc (go-runc's IO).
func (p *pipes) Set(cmd *exec.Cmd) {
	if p.child[0] != nil {
		cmd.Stdin = p.child[0]
	}
	if p.child[1] != nil {
		cmd.Stdout = p.child[1]
	}
	if p.child[2] != nil {
		cmd.Stderr = p.child[2]
	}
}

// CloseAfterStart drops the shim's copies of the child ends: the copies
// then see EOF when the process's side closes.
func (p *pipes) CloseAfterStart() error {
	for i, f := range p.child {
		if f != nil {
			f.Close()
			p.child[i] = nil
		}
	}
	return nil
}

func (p *pipes) Close() error {
	p.CloseAfterStart()
	for _, f := range p.parent {
		if f != nil {
			f.Close()
		}
	}
	return nil
}

// sharedWriter closes its writer with its last user (stdout and stderr
// going to one file).
type sharedWriter struct {
	io.WriteCloser
	mu   sync.Mutex
	refs int
}

func (s *sharedWriter) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refs--; s.refs > 0 {
		return nil
	}
	return s.WriteCloser.Close()
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }
