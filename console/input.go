package console

import (
	"fmt"
	"os"
	"sync"
	"syscall"
)

// Input is what a process's typed input is read from: a FIFO a client
// writes to, or a file. For a FIFO it also holds a write end open: a FIFO
// reader sees EOF whenever no writer has it open, so without the hold the
// input would end before the first client connects, or when one client
// detaches before the next attaches. CloseWrite drops the hold; the input
// then ends once every client has closed its end too.
type Input struct {
	r *os.File

	mu   sync.Mutex
	hold *os.File
}

// OpenInput opens path for reading without waiting for a writer.
func OpenInput(path string) (*Input, error) {
	r, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open input %s: %w", path, err)
	}
	in := &Input{r: r}
	fi, err := r.Stat()
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("open input %s: %w", path, err)
	}
	if fi.Mode()&os.ModeNamedPipe != 0 {
		// Never ENXIO: this process is a reader already.
		if in.hold, err = os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0); err != nil {
			r.Close()
			return nil, fmt.Errorf("open input %s: %w", path, err)
		}
	}
	return in, nil
}

// Read reads typed input; io.EOF once CloseWrite was called and every
// client closed its end (or at a file's end).
func (in *Input) Read(b []byte) (int, error) { return in.r.Read(b) }

// CloseWrite drops the write end held open since OpenInput (containerd's
// CloseIO). It is the same method name as a socket's half-close, which is
// how a Console finds it.
func (in *Input) CloseWrite() error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.hold == nil {
		return nil
	}
	err := in.hold.Close()
	in.hold = nil
	return err
}

// Close closes the input; a pending Read returns.
func (in *Input) Close() error {
	in.CloseWrite()
	return in.r.Close()
}
