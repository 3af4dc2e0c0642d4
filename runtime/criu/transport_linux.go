package criu

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"golang.org/x/sys/unix"
)

// maxMessage bounds what a peer can make us allocate. CRIU's largest
// messages (responses carrying feature lists or page-server info) are a
// few hundred bytes. A variable so tests can lower it.
var maxMessage = 1 << 20

const (
	// maxFDs is how many descriptors one message may carry. CRIU sends at
	// most one; room for more lets us see, close and reject a misbehaving
	// peer instead of having the kernel truncate silently.
	maxFDs = 16
)

// ErrTruncated is returned when a message or its control data did not fit.
var ErrTruncated = errors.New("criu rpc: message truncated")

// conn is one end of the SOCK_SEQPACKET socketpair. It is the whole
// transport: marshal, send, size-then-receive with SCM_RIGHTS. It goes
// through Go's netpoller so deadlines and Close unblock a pending receive.
type conn struct {
	uc *net.UnixConn
	rc syscall.RawConn
}

// socketpair returns the client conn and the server end to hand to criu.
func socketpair() (*conn, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("criu rpc: socketpair: %w", err)
	}
	client := os.NewFile(uintptr(fds[0]), "criu-client")
	server := os.NewFile(uintptr(fds[1]), "criu-server")
	c, err := newConn(client)
	client.Close()
	if err != nil {
		server.Close()
		return nil, nil, err
	}
	return c, server, nil
}

// newConn wraps a SOCK_SEQPACKET socket. The caller keeps ownership of f.
func newConn(f *os.File) (*conn, error) {
	fc, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("criu rpc: wrap socket: %w", err)
	}
	uc, ok := fc.(*net.UnixConn)
	if !ok {
		fc.Close()
		return nil, fmt.Errorf("criu rpc: socket is %T, not a unix socket", fc)
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		uc.Close()
		return nil, fmt.Errorf("criu rpc: %w", err)
	}
	return &conn{uc: uc, rc: rc}, nil
}

func (c *conn) Close() error { return c.uc.Close() }

type marshaler interface{ MarshalVT() ([]byte, error) }

// send writes one message. SEQPACKET writes are atomic: all or nothing.
func (c *conn) send(m marshaler) error {
	b, err := m.MarshalVT()
	if err != nil {
		return fmt.Errorf("criu rpc: marshal: %w", err)
	}
	var werr error
	err = c.rc.Write(func(fd uintptr) bool {
		_, werr = unix.Write(int(fd), b)
		return werr != unix.EAGAIN
	})
	if err == nil {
		err = werr
	}
	if err != nil {
		return fmt.Errorf("criu rpc: send: %w", err)
	}
	return nil
}

// recvRaw receives one message and the descriptors attached to it. The size
// is taken first with MSG_PEEK|MSG_TRUNC so no message is ever cut short.
// Returned files are close-on-exec; on error none are returned (all closed).
// io.EOF means the peer closed its end.
func (c *conn) recvRaw() ([]byte, []*os.File, error) {
	return c.recvWith(c.rc.Read)
}

// recvNow receives a message already queued, without waiting and whatever
// the read deadline (unix.EAGAIN when there is none).
func (c *conn) recvNow() (*rpc.CriuResp, []*os.File, error) {
	b, files, err := c.recvWith(func(f func(fd uintptr) bool) error {
		return c.rc.Control(func(fd uintptr) { f(fd) })
	})
	if err != nil {
		return nil, nil, err
	}
	return c.decode(b, files)
}

// recvWith receives through read: the netpoller's RawConn.Read, or a
// single non-blocking try.
func (c *conn) recvWith(read func(func(fd uintptr) bool) error) ([]byte, []*os.File, error) {
	var size int
	var rerr error
	err := read(func(fd uintptr) bool {
		size, _, rerr = unix.Recvfrom(int(fd), nil, unix.MSG_PEEK|unix.MSG_TRUNC|unix.MSG_DONTWAIT)
		size, _, rerr = unix.Recvfrom(int(fd), nil, unix.MSG_PEEK|unix.MSG_TRUNC)
		return rerr != unix.EAGAIN
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		return nil, nil, fmt.Errorf("criu rpc: receive: %w", err)
	}
	if size == 0 {
		// A zero-length read on SEQPACKET is end of stream; CRIU never
		// sends empty messages.
		return nil, nil, io.EOF
	}
	if size > maxMessage {
		return nil, nil, fmt.Errorf("criu rpc: message of %d bytes exceeds the %d byte limit", size, maxMessage)
	}
	buf := make([]byte, size)
	oob := make([]byte, unix.CmsgSpace(maxFDs*4))
	var n, oobn, flags int
	err = read(func(fd uintptr) bool {
		n, oobn, flags, _, rerr = unix.Recvmsg(int(fd), buf, oob, unix.MSG_CMSG_CLOEXEC|unix.MSG_DONTWAIT)
		return rerr != unix.EAGAIN
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		return nil, nil, fmt.Errorf("criu rpc: receive: %w", err)
	}
	files, perr := parseRights(oob[:oobn])
	switch {
	case perr != nil:
		closeAll(files)
		return nil, nil, perr
	case flags&unix.MSG_CTRUNC != 0:
		closeAll(files)
		return nil, nil, fmt.Errorf("%w: control data (descriptors) did not fit", ErrTruncated)
	case flags&unix.MSG_TRUNC != 0 || n != size:
		closeAll(files)
		return nil, nil, fmt.Errorf("%w: got %d of %d bytes", ErrTruncated, n, size)
	}
	return buf[:n], files, nil
}

// recv receives and decodes one CRIU response.
func (c *conn) recv() (*rpc.CriuResp, []*os.File, error) {
	b, files, err := c.recvRaw()
	if err != nil {
		return nil, nil, err
	}
	return c.decode(b, files)
}

func (c *conn) decode(b []byte, files []*os.File) (*rpc.CriuResp, []*os.File, error) {
	resp := &rpc.CriuResp{}
	if err := resp.UnmarshalVT(b); err != nil {
		closeAll(files)
		return nil, nil, fmt.Errorf("criu rpc: decode response (%d bytes): %w", len(b), err)
	}
	return resp, files, nil
}

func parseRights(oob []byte) ([]*os.File, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("criu rpc: parse control data: %w", err)
	}
	var files []*os.File
	var bad error
	for i := range msgs {
		fds, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			bad = fmt.Errorf("criu rpc: unexpected control message (level %d type %d)", msgs[i].Header.Level, msgs[i].Header.Type)
			continue
		}
		for _, fd := range fds {
			files = append(files, os.NewFile(uintptr(fd), fmt.Sprintf("criu-fd-%d", fd)))
		}
	}
	return files, bad
}

func closeAll(files []*os.File) {
	for _, f := range files {
		if f != nil {
			f.Close()
		}
	}
}
