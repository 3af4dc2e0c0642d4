package console

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// Socket is a unix socket a runtime sends a terminal process's pty master
// to (runc create/exec --console-socket). It is go-runc's ConsoleSocket.
type Socket struct {
	dir string
	l   *net.UnixListener
}

// NewSocket listens on a socket in a new temporary directory: a short
// path, as unix socket paths are limited to 108 bytes.
func NewSocket() (*Socket, error) {
	dir, err := os.MkdirTemp("", "ckpt-pty")
	if err != nil {
		return nil, fmt.Errorf("console socket: %w", err)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, "s"), Net: "unix"})
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("console socket: %w", err)
	}
	return &Socket{dir: dir, l: l}, nil
}

// Path is the socket's path, for --console-socket.
func (s *Socket) Path() string { return filepath.Join(s.dir, "s") }

// Receive waits up to timeout for one connection carrying exactly one pty
// master. runc has sent it by the time create or exec returns, so the
// timeout only guards against a runtime that never does; its error wraps
// os.ErrDeadlineExceeded.
func (s *Socket) Receive(timeout time.Duration) (*Master, error) {
	deadline := time.Now().Add(timeout)
	if err := s.l.SetDeadline(deadline); err != nil {
		return nil, fmt.Errorf("console socket: %w", err)
	}
	conn, err := s.l.AcceptUnix()
	if err != nil {
		return nil, fmt.Errorf("console socket %s: no connection within %s: %w", s.Path(), timeout, err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(deadline); err != nil {
		return nil, fmt.Errorf("console socket: %w", err)
	}
	// runc sends the master's name as data; the name is not needed.
	data := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4*4))
	n, oobn, flags, _, err := conn.ReadMsgUnix(data, oob)
	switch {
	case errors.Is(err, io.EOF) || (err == nil && n == 0 && oobn == 0):
		return nil, fmt.Errorf("console socket %s: the sender closed the connection without a pty master: %w", s.Path(), io.ErrUnexpectedEOF)
	case err != nil:
		return nil, fmt.Errorf("console socket %s: no pty master within %s: %w", s.Path(), timeout, err)
	}
	fds, err := unixRights(oob[:oobn])
	if err == nil && flags&unix.MSG_CTRUNC != 0 {
		err = errors.New("control data truncated: more descriptors than a pty master")
	}
	switch {
	case err != nil:
	case len(fds) == 0:
		err = errors.New("a message came without a pty master (no SCM_RIGHTS descriptor)")
	case len(fds) > 1:
		err = fmt.Errorf("%d descriptors came, want one pty master", len(fds))
	}
	if err != nil {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, fmt.Errorf("console socket %s: %w", s.Path(), err)
	}
	return MasterFromFd(fds[0])
}

// unixRights are the descriptors in SCM_RIGHTS control messages.
func unixRights(oob []byte) ([]int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	var fds []int
	for i := range msgs {
		if msgs[i].Header.Level != unix.SOL_SOCKET || msgs[i].Header.Type != unix.SCM_RIGHTS {
			continue
		}
		got, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			return fds, err
		}
		fds = append(fds, got...)
	}
	return fds, nil
}

// Close stops listening and removes the socket's directory.
func (s *Socket) Close() error {
	err := s.l.Close()
	if rerr := os.RemoveAll(s.dir); err == nil {
		err = rerr
	}
	return err
}
