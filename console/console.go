package console

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/containerd/log"
	"github.com/creack/pty"
)

var (
	// ErrNoMaster: the console has no master yet.
	ErrNoMaster = errors.New("no pty master yet")
	// ErrAttached: the console has a master already.
	ErrAttached = errors.New("console has a pty master already")
	// ErrClosed: the console is closed.
	ErrClosed = errors.New("console closed")
)

// copyBufferSize is the copies' buffer: more than a pty hands over at once.
const copyBufferSize = 32 << 10

// Console is one process's terminal: its master, once it arrives, the
// window size the client wants, and the copies between the master and the
// process's stdio. A terminal has no separate stderr: everything the
// process writes comes out of the master. A Console owns its master, stdin
// and stdout, and closes them.
type Console struct {
	ctx    context.Context
	stdin  io.Reader // nil: nothing is typed
	stdout io.Writer // nil: output is read and dropped

	mu        sync.Mutex
	master    *Master
	requested *pty.Winsize
	closed    bool
	eofWanted bool          // CloseStdin without stdin
	eofSent   bool          // with eofWanted
	outDone   chan struct{} // closed when the output copy ends
	outErr    error
}

// New returns a console that copies stdin to the master and the master's
// output to stdout once Attach gives it a master. stdin may be an Input,
// stdout what OpenOutput returns; either may be nil. ctx carries the
// logger.
func New(ctx context.Context, stdin io.Reader, stdout io.Writer) *Console {
	return &Console{ctx: ctx, stdin: stdin, stdout: stdout}
}

// Attach gives the console its master: the requested window size is set
// and the copies start. A console takes one master; any other is closed
// and an error says whose it was, so that no master goes unnoticed.
func (c *Console) Attach(m *Master) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed:
		m.Close()
		return fmt.Errorf("pty master for %s refused and closed: %w", m, ErrClosed)
	case c.master != nil:
		m.Close()
		return fmt.Errorf("pty master for %s refused and closed: the console holds the one for %s: %w", m, c.master, ErrAttached)
	}
	c.master = m
	if c.requested != nil {
		if err := m.SetSize(*c.requested); err != nil {
			log.G(c.ctx).WithError(err).WithField("pts", m.String()).Warn("cannot set the requested window size")
		}
	}
	c.outDone = make(chan struct{})
	go c.copyOut(m)
	if c.stdin != nil {
		go c.copyIn(m)
	} else if c.eofWanted {
		c.sendEOFLocked()
	}
	return nil
}

// Resize sets the window size at once, or, before the master has
// arrived, when it does.
func (c *Console) Resize(ws pty.Winsize) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.requested = &ws
	if c.master == nil {
		return nil
	}
	return c.master.SetSize(ws)
}

// RequestedSize is the last size Resize was given. A caller sets it again
// when something other than the console may have changed the size since
// Attach (CRIU restores a terminal's checkpointed size after it has sent
// the master).
func (c *Console) RequestedSize() (pty.Winsize, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.requested == nil {
		return pty.Winsize{}, false
	}
	return *c.requested, true
}

// Size is the terminal's current window size.
func (c *Console) Size() (pty.Winsize, error) {
	c.mu.Lock()
	m := c.master
	c.mu.Unlock()
	if m == nil {
		return pty.Winsize{}, ErrNoMaster
	}
	return m.Size()
}

// Master is the console's master; nil before Attach.
func (c *Console) Master() *Master {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.master
}

// CloseStdin ends the process's input (containerd's CloseIO). A terminal
// has no pipe to close, so the end of input is typed, as a user would: the
// terminal's EOF character (VEOF, usually ^D), twice after a partial line
// in canonical mode, where the first only hands the line over.
//
// With an Input (anything with CloseWrite) its hold on the FIFO goes, and
// the EOF character follows what the clients typed once they have closed
// their ends too. With no stdin it is typed at once, or on Attach. A reader
// without CloseWrite gets it at its own EOF.
func (c *Console) CloseStdin() error {
	if hc, ok := c.stdin.(interface{ CloseWrite() error }); ok {
		return hc.CloseWrite()
	}
	if c.stdin != nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.eofWanted = true
	if c.master != nil {
		c.sendEOFLocked()
	}
	return nil
}

// sendEOFLocked types end-of-input once, without holding c.mu while it
// writes: a process that reads no input can leave the write waiting.
func (c *Console) sendEOFLocked() {
	if c.eofSent {
		return
	}
	c.eofSent = true
	m := c.master
	go func() {
		if err := m.endInput(-1); err != nil && !errors.Is(err, os.ErrClosed) {
			log.G(c.ctx).WithError(err).WithField("pts", m.String()).Warn("cannot end the terminal's input")
		}
	}()
}

// Wait returns when the output copy has ended (every process on the
// terminal has gone, or Close), at once if no master was attached. The
// error is a read error other than the end of the terminal.
func (c *Console) Wait() error {
	c.mu.Lock()
	done := c.outDone
	c.mu.Unlock()
	if done == nil {
		return nil
	}
	<-done
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.outErr
}

// Close closes the master, stdin and stdout; the copies end.
func (c *Console) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	m := c.master
	c.mu.Unlock()
	var errs []error
	if cl, ok := c.stdin.(io.Closer); ok {
		errs = append(errs, cl.Close())
	}
	if m != nil {
		errs = append(errs, m.Close())
	}
	if cl, ok := c.stdout.(io.Closer); ok {
		errs = append(errs, ignoreClosed(cl.Close()))
	}
	return errors.Join(errs...)
}

// copyOut copies the terminal's output to stdout until every process on
// the terminal has gone. A failing stdout does not stop the copy: the
// output is then dropped, so that the process never blocks on a full
// terminal. stdout is closed at the end, so its reader sees EOF.
func (c *Console) copyOut(m *Master) {
	logger := log.G(c.ctx).WithField("pts", m.String())
	buf := make([]byte, copyBufferSize)
	out := c.stdout
	var readErr error
	for {
		n, err := m.Read(buf)
		if n > 0 && out != nil {
			if _, werr := out.Write(buf[:n]); werr != nil {
				if !errors.Is(werr, os.ErrClosed) {
					logger.WithError(werr).Warn("cannot write the terminal's output; dropping it from now on")
				}
				out = nil
			}
		}
		if err != nil {
			if err != io.EOF && !errors.Is(err, os.ErrClosed) {
				readErr = fmt.Errorf("read %s's master: %w", m, err)
				logger.WithError(err).Warn("terminal output copy ended")
			}
			break
		}
	}
	if cl, ok := c.stdout.(io.Closer); ok {
		if err := cl.Close(); ignoreClosed(err) != nil {
			logger.WithError(err).Debug("close the terminal's output")
		}
	}
	c.mu.Lock()
	c.outErr = readErr
	close(c.outDone)
	c.mu.Unlock()
}

// copyIn types stdin on the terminal. At stdin's end the process reads
// end-of-input.
func (c *Console) copyIn(m *Master) {
	logger := log.G(c.ctx).WithField("pts", m.String())
	buf := make([]byte, copyBufferSize)
	lastTyped := -1
	for {
		n, err := c.stdin.Read(buf)
		if n > 0 {
			if _, werr := m.Write(buf[:n]); werr != nil {
				if !errors.Is(werr, os.ErrClosed) {
					logger.WithError(werr).Warn("cannot type input on the terminal")
				}
				return
			}
			lastTyped = int(buf[n-1])
		}
		switch {
		case err == io.EOF:
			if err := m.endInput(lastTyped); err != nil && !errors.Is(err, os.ErrClosed) {
				logger.WithError(err).Warn("cannot end the terminal's input")
			}
			return
		case err != nil:
			if !errors.Is(err, os.ErrClosed) {
				logger.WithError(err).Warn("terminal input copy ended")
			}
			return
		}
	}
}

func ignoreClosed(err error) error {
	if errors.Is(err, os.ErrClosed) {
		return nil
	}
	return err
}
