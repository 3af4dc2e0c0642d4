package container

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/ckpt-dev/ckpt/console"
	"github.com/ckpt-dev/ckpt/runtime/image"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

// restoredPtys are the pty masters CRIU sends while restoring a terminal
// (orphan-pts-master), one per terminal of the tree. This is the one place
// that decides which is the init's: the pty index descriptors.json records
// for the init's stdio, which CRIU restores; without one, the first master
// to arrive. CRIU sets each tty's checkpointed window size after it has
// sent the master, so the masters are kept until post-restore, when the
// size ckpt recorded is set and they are handed to RestoreOptions.Console:
// the caller gets them once nothing else will change them, and the
// restored program has its size before it runs again.
type restoredPtys struct {
	initPts int // -1: unknown

	mu        sync.Mutex
	initTaken bool
	held      []restoredPty
}

type restoredPty struct {
	master *os.File
	init   bool
}

func newRestoredPtys(descriptors []string) *restoredPtys {
	return &restoredPtys{initPts: initPtsNumber(descriptors)}
}

// initPtsNumber is the pty index of the checkpointed init's stdio as
// descriptors.json records it ("/dev/pts/N"); -1 if there is none.
func initPtsNumber(descriptors []string) int {
	for _, l := range descriptors {
		if n, ok := strings.CutPrefix(l, "/dev/pts/"); ok {
			if v, err := strconv.Atoi(n); err == nil && v >= 0 {
				return v
			}
		}
	}
	return -1
}

// add keeps a master CRIU sent and decides whether it is the init's.
func (p *restoredPtys) add(master *os.File) error {
	n, err := ptsNumber(master)
	if err != nil {
		master.Close()
		return fmt.Errorf("restored pty master: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	init := !p.initTaken && (p.initPts < 0 || n == p.initPts)
	if init {
		p.initTaken = true
	}
	p.held = append(p.held, restoredPty{master: master, init: init})
	return nil
}

// handOver sets ws (if any) on every held master and gives each to take,
// which owns it from then on. Every master is handed over even if one
// fails; the first error is returned.
func (p *restoredPtys) handOver(ctx context.Context, ws *image.WindowSize, take func(master *os.File, init bool) error) error {
	p.mu.Lock()
	held := p.held
	p.held = nil
	p.mu.Unlock()
	var first error
	for _, h := range held {
		if ws != nil && ws.Rows > 0 && ws.Cols > 0 {
			if err := setWinsize(h.master, ws); err != nil {
				log.G(ctx).WithError(err).Warn("cannot set the restored terminal's window size")
			}
		}
		if err := take(h.master, h.init); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// close drops masters never handed over (a failed restore). A restore
// that failed before it read the image has none.
func (p *restoredPtys) close() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, h := range p.held {
		h.master.Close()
	}
	p.held = nil
}

// ptsNumber and setWinsize go through console.Control, not Fd(), which
// would switch the master, shared with the caller, to blocking mode.
func ptsNumber(f *os.File) (int, error) {
	var n uint32
	err := console.Control(f, func(fd int) (err error) {
		n, err = unix.IoctlGetUint32(fd, unix.TIOCGPTN)
		return err
	})
	if err != nil {
		return -1, fmt.Errorf("%s is not a pty master (TIOCGPTN): %w", f.Name(), err)
	}
	return int(n), nil
}

func setWinsize(f *os.File, ws *image.WindowSize) error {
	return console.Control(f, func(fd int) error {
		return unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: ws.Rows, Col: ws.Cols})
	})
}
