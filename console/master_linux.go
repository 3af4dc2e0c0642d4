package console

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// Master is a pty master. It owns its descriptor, which is non-blocking:
// reads and writes wait in Go's netpoller, so Close unblocks them.
type Master struct {
	f      *os.File
	number int
}

// MasterFromFd takes ownership of fd, a pty master received as a raw
// descriptor (SCM_RIGHTS). fd is closed if it is not a pty master.
func MasterFromFd(fd int) (*Master, error) {
	n, err := unix.IoctlGetUint32(fd, unix.TIOCGPTN)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("fd %d is not a pty master (TIOCGPTN): %w", fd, err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("pty master /dev/pts/%d: set non-blocking: %w", n, err)
	}
	// os.NewFile registers a non-blocking descriptor with the netpoller.
	return &Master{f: os.NewFile(uintptr(fd), fmt.Sprintf("pty master of /dev/pts/%d", n)), number: int(n)}, nil
}

// MasterFromFile takes ownership of f, a pty master. f itself is closed:
// whether an *os.File is pollable is fixed when it is made, and f may be
// blocking (pty.Open's master has had Fd() called, which makes it so; a
// descriptor wrapped by os.NewFile while blocking never is pollable). The
// Master uses a non-blocking duplicate of the same open file instead.
func MasterFromFile(f *os.File) (*Master, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("pty master %s: %w", f.Name(), err)
	}
	fd, dupErr := -1, error(nil)
	err = rc.Control(func(raw uintptr) { fd, dupErr = unix.FcntlInt(raw, unix.F_DUPFD_CLOEXEC, 0) })
	f.Close()
	if err == nil {
		err = dupErr
	}
	if err != nil {
		return nil, fmt.Errorf("pty master %s: duplicate: %w", f.Name(), err)
	}
	return MasterFromFd(fd)
}

// Number is the pty's index (TIOCGPTN): its slave is /dev/pts/Number in the
// devpts instance the master came from (a container's own, for masters
// from runc or CRIU). It tells several masters of one container apart.
func (m *Master) Number() int { return m.number }

// String names the slave, for logs and errors.
func (m *Master) String() string { return fmt.Sprintf("/dev/pts/%d", m.number) }

// Read reads the terminal's output. EIO means that no slave descriptor is
// open any more (every process on the terminal has gone): it is returned
// as io.EOF, the end of the output.
func (m *Master) Read(b []byte) (int, error) {
	n, err := m.f.Read(b)
	if err != nil && errors.Is(err, syscall.EIO) {
		return n, io.EOF
	}
	return n, err
}

// Write types b on the terminal.
func (m *Master) Write(b []byte) (int, error) { return m.f.Write(b) }

// Close closes the master; pending reads and writes return. Processes on
// the terminal get a hangup.
func (m *Master) Close() error { return m.f.Close() }

// SetSize sets the terminal's window size; the processes on it get
// SIGWINCH.
func (m *Master) SetSize(ws pty.Winsize) error {
	return m.control(func(fd int) error {
		return unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: ws.Rows, Col: ws.Cols, Xpixel: ws.X, Ypixel: ws.Y})
	})
}

// Size is the terminal's window size.
func (m *Master) Size() (pty.Winsize, error) {
	var ws pty.Winsize
	err := m.control(func(fd int) error {
		uws, err := unix.IoctlGetWinsize(fd, unix.TIOCGWINSZ)
		if err == nil {
			ws = pty.Winsize{Rows: uws.Row, Cols: uws.Col, X: uws.Xpixel, Y: uws.Ypixel}
		}
		return err
	})
	return ws, err
}

// endInput makes the process reading the terminal see the end of its
// input, as a user typing the terminal's EOF character (VEOF, usually ^D)
// would. In canonical mode VEOF ends input only at the start of a line;
// after a partial line (lastTyped is not a line end) it first hands the
// partial line over, so it is typed twice. lastTyped < 0: nothing was typed.
// A terminal in raw mode gets the character once and its reader decides.
func (m *Master) endInput(lastTyped int) error {
	var t *unix.Termios
	// Termios ioctls on a master act on its slave's settings.
	if err := m.control(func(fd int) (err error) {
		t, err = unix.IoctlGetTermios(fd, unix.TCGETS)
		return err
	}); err != nil {
		return fmt.Errorf("%s: read terminal settings: %w", m, err)
	}
	veof := t.Cc[unix.VEOF]
	if veof == 0 { // _POSIX_VDISABLE
		return fmt.Errorf("%s: the terminal has no EOF character (VEOF is disabled)", m)
	}
	eof := []byte{veof}
	partial := lastTyped >= 0 && lastTyped != '\n' && lastTyped != '\r' && lastTyped != int(veof)
	if t.Lflag&unix.ICANON != 0 && partial {
		eof = append(eof, veof)
	}
	if _, err := m.f.Write(eof); err != nil {
		return fmt.Errorf("%s: type EOF: %w", m, err)
	}
	return nil
}

// control runs an ioctl on the master's descriptor (see Control).
func (m *Master) control(ioctl func(fd int) error) error { return Control(m.f, ioctl) }

// Control runs ioctl on f's descriptor. Not through Fd(), which would
// switch the file to blocking mode for good (creack/pty's Setsize and
// GetsizeFull call it): Close would then no longer unblock a Read. For
// pty masters that are not yet a Master (a restore sets the recorded
// window size on them before handing them over).
func Control(f *os.File, ioctl func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ioErr error
	if err := rc.Control(func(fd uintptr) { ioErr = ioctl(int(fd)) }); err != nil {
		return err
	}
	return ioErr
}
