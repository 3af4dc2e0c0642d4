package shim

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// This file is the shim's stand-in for ckpt's console package (pty
// masters: window size, copy, EIO), which is being written; it follows the
// same rules so that the swap is mechanical: the master is non-blocking
// before it becomes an *os.File (reads use the netpoller and Close
// unblocks them), and the window size goes through SyscallConn, never
// Fd(), which would switch the file back to blocking mode.

// consoleSocket receives the pty master runc sends for a terminal process
// (runc create/exec --console-socket).
type consoleSocket struct {
	dir string
	l   *net.UnixListener
}

func newConsoleSocket() (*consoleSocket, error) {
	// A short path: unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "ckpt-pty")
	if err != nil {
		return nil, err
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, "s"), Net: "unix"})
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("console socket: %w", err)
	}
	return &consoleSocket{dir: dir, l: l}, nil
}

// Path is what runc's --console-socket gets (go-runc's ConsoleSocket).
func (c *consoleSocket) Path() string { return filepath.Join(c.dir, "s") }

// receive takes the master runc sent. runc has sent it before create or
// exec returned, so the timeout only guards against a runc that did not.
func (c *consoleSocket) receive(timeout time.Duration) (*os.File, error) {
	if err := c.l.SetDeadline(time.Now().Add(timeout)); err != nil {
		return nil, err
	}
	conn, err := c.l.AcceptUnix()
	if err != nil {
		return nil, fmt.Errorf("console socket: no pty master from runc: %w", err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return nil, err
	}
	name := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4*4))
	n, oobn, _, _, err := conn.ReadMsgUnix(name, oob)
	if err != nil {
		return nil, fmt.Errorf("console socket: %w", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		return nil, fmt.Errorf("console socket: %w", err)
	}
	var fds []int
	for _, m := range msgs {
		got, err := unix.ParseUnixRights(&m)
		if err == nil {
			fds = append(fds, got...)
		}
	}
	if len(fds) == 0 {
		return nil, errors.New("console socket: runc sent no pty master")
	}
	for _, fd := range fds[1:] {
		unix.Close(fd)
	}
	return masterFile(fds[0], string(name[:n]))
}

func (c *consoleSocket) Close() {
	c.l.Close()
	os.RemoveAll(c.dir)
}

// masterFile makes a pty master fd an *os.File that uses the netpoller.
func masterFile(fd int, name string) (*os.File, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("pty master: %w", err)
	}
	if name == "" {
		name = "ptmx"
	}
	return os.NewFile(uintptr(fd), name), nil
}

// ptyReader reads a pty master; EIO means every slave fd is closed, which
// for the copy is the end of the output.
type ptyReader struct{ f *os.File }

func (r ptyReader) Read(b []byte) (int, error) {
	n, err := r.f.Read(b)
	if err != nil && errors.Is(err, syscall.EIO) {
		return n, io.EOF
	}
	return n, err
}

func setWinsize(f *os.File, ws WindowSize) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ioErr error
	if err := rc.Control(func(fd uintptr) {
		ioErr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Row: ws.Rows, Col: ws.Cols})
	}); err != nil {
		return err
	}
	return ioErr
}

func getWinsize(f *os.File) (WindowSize, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return WindowSize{}, err
	}
	var (
		ws    *unix.Winsize
		ioErr error
	)
	if err := rc.Control(func(fd uintptr) {
		ws, ioErr = unix.IoctlGetWinsize(int(fd), unix.TIOCGWINSZ)
	}); err != nil {
		return WindowSize{}, err
	}
	if ioErr != nil {
		return WindowSize{}, ioErr
	}
	return WindowSize{Rows: ws.Row, Cols: ws.Col}, nil
}
