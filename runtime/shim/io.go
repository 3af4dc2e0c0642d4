package shim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"sync"
	"syscall"

	"github.com/ckpt-dev/ckpt/console"
	"github.com/containerd/containerd/v2/pkg/stdio"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
)

// procIO connects a process's stdio to what containerd gave: FIFOs (or a
// file:// URI) for stdin, stdout and stderr. A process without a terminal
// gets pipes, which the shim copies; a terminal process gets a console,
// which copies once its pty master arrives (from runc's console socket or
// CRIU's orphan-pts-master). Output to a FIFO whose reader went away is
// dropped rather than blocking the process (console.OpenOutput).
type procIO struct {
	ctx     context.Context
	stdio   stdio.Stdio
	pipes   *pipes           // no terminal: the process's pipes; nil without stdio
	console *console.Console // terminal only
	logger  *binaryLogger    // binary:// stdio: reads the pipes instead of the shim
	// logOut is the read end of the pipe a terminal's console writes its
	// output into for the logger (binary:// with a terminal), until start.
	logOut *os.File

	mu      sync.Mutex
	stdin   *console.Input // the stdin FIFO of a process with pipes
	outputs sync.WaitGroup // stdout and stderr copies
}

// newProcIO makes the pipes, or the console, for a process; uid and gid own
// the pipes' container ends (containerd's IoUid/IoGid for user namespaces).
// ctx carries the logger of the copies, which outlive the request.
func newProcIO(ctx context.Context, sio stdio.Stdio, uid, gid int, id string) (*procIO, error) {
	p := &procIO{ctx: ctx, stdio: sio}
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
		case "binary":
			if p.logger, err = newBinaryLogger(ctx, u, id); err != nil {
				return nil, err
			}
			if !sio.Terminal {
				// The logger reads both streams; there is no stdin.
				p.stdio.Stdin = ""
			}
		default:
			return nil, fmt.Errorf("stdio scheme %q (only FIFOs, file:// and binary:// are supported): %w", u.Scheme, errdefs.ErrNotImplemented)
		}
	}
	if sio.Terminal {
		if err := p.newConsole(); err != nil {
			return nil, err
		}
		return p, nil
	}
	if sio.IsNull() {
		return p, nil
	}
	pp, err := newPipes(p.stdio.Stdin != "", p.stdio.Stdout != "", p.stdio.Stderr != "", uid, gid)
	if err != nil {
		return nil, err
	}
	p.pipes = pp
	return p, nil
}

// newConsole opens the terminal's stdin and stdout; a terminal has no
// separate stderr.
func (p *procIO) newConsole() error {
	// Untyped nils: a nil *Input in an io.Reader would not be nil.
	var (
		in  io.Reader
		out io.Writer
	)
	if p.stdio.Stdin != "" {
		input, err := console.OpenInput(p.stdio.Stdin)
		if err != nil {
			return err
		}
		in = input
	}
	switch {
	case p.logger != nil:
		// The terminal's output (stdout and stderr in one) goes to the
		// logger's stdout; the console closes it at the terminal's end, and
		// the logger reads EOF.
		r, w, err := os.Pipe()
		if err != nil {
			if in != nil {
				in.(io.Closer).Close()
			}
			return err
		}
		p.logOut, out = r, w
	case p.stdio.Stdout != "":
		output, err := console.OpenOutput(p.ctx, p.stdio.Stdout)
		if err != nil {
			if in != nil {
				in.(io.Closer).Close()
			}
			return err
		}
		out = output
	}
	p.console = console.New(p.ctx, in, out)
	return nil
}

// childFiles are the container's ends of the pipes (nil entries: none).
func (p *procIO) childFiles() [3]*os.File {
	if p.pipes == nil {
		return [3]*os.File{}
	}
	return p.pipes.child
}

// start copies between the pipes and containerd's FIFOs. It returns once
// the FIFOs are open; output written before the client's reader is there
// waits for it (console.OpenOutput).
func (p *procIO) start() error {
	if p.logOut != nil {
		// A terminal's logger: it holds the read end from here.
		err := p.logger.start(p.ctx, p.logOut, nil)
		p.logOut.Close()
		p.logOut = nil
		return err
	}
	if p.pipes == nil {
		return nil
	}
	if p.logger != nil {
		// The logger has its own copies; the shim keeps none.
		err := p.logger.start(p.ctx, p.pipes.parent[1], p.pipes.parent[2])
		for i := 1; i < 3; i++ {
			if p.pipes.parent[i] != nil {
				p.pipes.parent[i].Close()
				p.pipes.parent[i] = nil
			}
		}
		return err
	}
	var shared *sharedWriter
	if p.stdio.Stdout != "" && p.stdio.Stdout == p.stdio.Stderr && p.pipes.parent[1] != nil && p.pipes.parent[2] != nil {
		out, err := console.OpenOutput(p.ctx, p.stdio.Stdout)
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
			p.copyOut(shared, src)
			continue
		}
		out, err := console.OpenOutput(p.ctx, path)
		if err != nil {
			return err
		}
		p.copyOut(out, src)
	}
	if p.stdio.Stdin != "" && p.pipes.parent[0] != nil {
		in, err := console.OpenInput(p.stdio.Stdin)
		if err != nil {
			return err
		}
		p.mu.Lock()
		p.stdin = in
		p.mu.Unlock()
		go copyIn(p.ctx, p.pipes.parent[0], in)
	}
	return nil
}

// attachConsole gives a terminal process's console its pty master; the
// copies start and a window size asked for earlier is applied.
func (p *procIO) attachConsole(master *console.Master) error {
	if p.console == nil {
		master.Close()
		return fmt.Errorf("pty master of %s for a process without a terminal: %w", master, errdefs.ErrFailedPrecondition)
	}
	return p.console.Attach(master)
}

// restoreFinished runs once a restore has completed: a terminal whose
// master never came is not connected, which the user should hear of.
// (The master came at post-restore, after CRIU set the tty's sizes, so the
// size the client asked for, which Attach applied, is still in force.)
func (p *procIO) restoreFinished() {
	if p.console != nil && p.console.Master() == nil {
		log.G(p.ctx).Warn("the restored init's pty master never arrived: its terminal is not connected")
	}
}

// takeRestoredMaster is RestoreOptions.Console: the init's pty master goes
// to its console. Any other belongs to a session containerd does not
// restore (an exec'd terminal): nobody can take it, so it is closed, which
// hangs that terminal up, and logged. runtime/container decides which is
// the init's.
func (p *procIO) takeRestoredMaster(f *os.File, init bool) error {
	m, err := console.MasterFromFile(f)
	if err != nil {
		return err
	}
	if !init {
		log.G(p.ctx).WithField("pts", m.String()).
			Warn("a restored pty master is not the init's and has no taker; closing it hangs its terminal up")
		return m.Close()
	}
	return p.attachConsole(m)
}

func (p *procIO) copyOut(w io.WriteCloser, r io.Reader) {
	p.outputs.Add(1)
	go func() {
		defer p.outputs.Done()
		if _, err := io.Copy(w, r); err != nil && !errors.Is(err, os.ErrClosed) {
			log.G(p.ctx).WithError(err).Warn("copy of process output")
		}
		w.Close()
	}()
}

// copyIn copies stdin until EOF, then closes the process's end so that it
// sees EOF too.
func copyIn(ctx context.Context, w io.WriteCloser, r io.ReadCloser) {
	if _, err := io.Copy(w, r); err != nil && !errors.Is(err, os.ErrClosed) && !errors.Is(err, syscall.EPIPE) {
		log.G(ctx).WithError(err).Debug("copy of process input")
	}
	w.Close()
	r.Close()
}

// closeStdin is CloseIO: once the client has closed its end too, the
// process reads EOF (on a terminal: the terminal's EOF character).
func (p *procIO) closeStdin() {
	if p.console != nil {
		if err := p.console.CloseStdin(); err != nil {
			log.G(p.ctx).WithError(err).Warn("close the terminal's input")
		}
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stdin != nil {
		p.stdin.CloseWrite()
	}
}

// wait returns when the process's output has been copied.
func (p *procIO) wait() {
	p.outputs.Wait()
	if p.logger != nil {
		p.logger.wait()
	}
	if p.console != nil {
		p.console.Wait()
	}
}

// close releases everything; the copies end.
func (p *procIO) close() {
	if p.console != nil {
		if err := p.console.Close(); err != nil {
			log.G(p.ctx).WithError(err).Debug("close the console")
		}
	}
	p.mu.Lock()
	if p.stdin != nil {
		p.stdin.Close()
		p.stdin = nil
	}
	p.mu.Unlock()
	if p.pipes != nil {
		p.pipes.Close()
	}
	if p.logOut != nil {
		p.logOut.Close()
		p.logOut = nil
	}
	if p.logger != nil {
		p.logger.kill()
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
