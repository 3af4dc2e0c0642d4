package console

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

// firstReaderGrace is how long output to a FIFO waits for its first reader.
// containerd's client opens its end in a goroutine that blocks in open(2)
// until a writer comes; until that goroutine has entered open(2), opening
// the FIFO for writing without blocking fails (ENXIO), and output written
// then would be dropped. The wait holds the copy, not the caller, and only
// until a reader has been seen once.
const firstReaderGrace = 2 * time.Second

// readerPoll is how often the grace period tries to open the FIFO again.
const readerPoll = 10 * time.Millisecond

// OpenOutput opens path, where a process's output goes. A FIFO gets a
// writer that tolerates its reader going away (see fifoOutput); anything
// else is a file, created if needed and appended to. Output to a FIFO that
// has never had a reader waits up to firstReaderGrace for one.
func OpenOutput(ctx context.Context, path string) (io.WriteCloser, error) {
	fi, err := os.Stat(path)
	switch {
	case err == nil && fi.Mode()&os.ModeNamedPipe != 0:
		return newFIFOOutput(ctx, path, firstReaderGrace), nil
	case err != nil && !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("open output %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("open output %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open output %s: %w", path, err)
	}
	return f, nil
}

// fifoOutput writes to a FIFO without ever holding its read end, and so
// without making the process wait for a client that went away:
//
//   - it opens the FIFO for writing only while a reader has it open
//     (O_NONBLOCK: ENXIO otherwise);
//   - a reader that closes its end turns the next write into EPIPE (Go
//     ignores SIGPIPE for descriptors other than its own stdout and
//     stderr): the writer closes its end and drops output from then on;
//   - every later write first tries to open the FIFO again, so a reader
//     that comes back (containerd's task attach opens the same path) gets
//     the output from then on;
//   - a reader that is there but slow makes writes wait (the descriptor is
//     in the netpoller), as a terminal's flow control would: nothing is
//     lost while someone reads. A reader that closes meanwhile wakes the
//     wait with EPIPE.
//
// The alternative, holding a read end as containerd's runc shim does, keeps
// open always succeeding, but once the client is gone the pipe fills and
// the process blocks on its next write.
type fifoOutput struct {
	path    string
	ctx     context.Context
	grace   time.Time // until then, wait for the first reader
	closing chan struct{}
	once    sync.Once

	mu        sync.Mutex
	f         *os.File // nil: no reader
	closed    bool
	hadReader bool
	dropped   int64 // bytes dropped since the last reader went away
	// openErrLogged: an open error other than "no reader" was logged
	// since the last reader.
	openErrLogged bool
}

func newFIFOOutput(ctx context.Context, path string, grace time.Duration) *fifoOutput {
	o := &fifoOutput{path: path, ctx: ctx, grace: time.Now().Add(grace), closing: make(chan struct{})}
	// A reader already there (containerd's client waiting in open(2))
	// is connected now rather than at the first output.
	o.mu.Lock()
	o.openLocked()
	o.mu.Unlock()
	return o
}

// Write writes b, or drops it when the FIFO has no reader; it fails only
// once the output is closed.
func (o *fifoOutput) Write(b []byte) (int, error) {
	f, err := o.writer()
	if err != nil {
		return 0, err
	}
	if f == nil {
		o.drop(len(b))
		return len(b), nil
	}
	n, err := f.Write(b)
	switch {
	case err == nil:
		return n, nil
	case errors.Is(err, syscall.EPIPE):
		o.readerGone(f)
		o.drop(len(b) - n)
		return len(b), nil
	}
	return n, err
}

// writer is the open write end, opening it if a reader is there now; nil
// when there is none.
func (o *fifoOutput) writer() (*os.File, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for {
		if o.closed {
			return nil, os.ErrClosed
		}
		if o.f != nil {
			return o.f, nil
		}
		err := o.openLocked()
		if err == nil {
			return o.f, nil
		}
		if err != unix.ENXIO {
			// Removed (containerd's client removes its FIFOs when it
			// closes them; an attach makes them again), or the like.
			if !o.openErrLogged {
				log.G(o.ctx).WithError(err).WithField("fifo", o.path).Debug("cannot open the output FIFO; dropping output")
				o.openErrLogged = true
			}
			return nil, nil
		}
		if o.hadReader || time.Now().After(o.grace) {
			return nil, nil
		}
		select {
		case <-o.closing:
			return nil, os.ErrClosed
		case <-time.After(readerPoll):
		}
	}
}

// openLocked opens the write end if the FIFO has a reader (else ENXIO).
func (o *fifoOutput) openLocked() error {
	fd, err := unix.Open(o.path, unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	// Non-blocking, so os.NewFile puts it in the netpoller.
	o.f = os.NewFile(uintptr(fd), o.path)
	if o.hadReader {
		log.G(o.ctx).WithField("fifo", o.path).WithField("dropped_bytes", o.dropped).Info("output reader is back")
	}
	o.hadReader, o.dropped, o.openErrLogged = true, 0, false
	return nil
}

func (o *fifoOutput) readerGone(f *os.File) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.f != f {
		return
	}
	f.Close()
	o.f = nil
	log.G(o.ctx).WithField("fifo", o.path).Info("output reader went away; dropping output until one opens the FIFO again")
}

func (o *fifoOutput) drop(n int) {
	o.mu.Lock()
	o.dropped += int64(n)
	o.mu.Unlock()
}

// Close closes the write end; a reader sees EOF. A Write waiting for room
// in the FIFO returns. A reader that is waiting in open(2) for a writer
// that never came (no output, or none since it arrived) is let in and sees
// EOF too, as it would have had the write end been open all along.
func (o *fifoOutput) Close() error {
	o.once.Do(func() { close(o.closing) })
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return nil
	}
	o.closed = true
	if o.f == nil {
		if o.openLocked() != nil {
			return nil
		}
	}
	err := o.f.Close()
	o.f = nil
	return err
}
