package console

import (
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// What a runtime may send to the console socket, and what Receive makes of
// it.
func TestSocketReceive(t *testing.T) {
	tests := []struct {
		name    string
		fds     func(t *testing.T) []int // descriptors to send; nil: none
		data    string
		wantErr string // "" takes a master
	}{
		{name: "pty master", fds: ptyMasterFd, data: "/dev/ptmx"},
		{name: "message without descriptors", data: "/dev/ptmx", wantErr: "without a pty master"},
		{name: "two descriptors", fds: twoFds, data: "/dev/ptmx", wantErr: "2 descriptors came"},
		{name: "not a pty master", fds: pipeFd, data: "pipe", wantErr: "not a pty master"},
		{name: "closed without a message", wantErr: "closed the connection without a pty master"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sock, err := NewSocket()
			if err != nil {
				t.Fatal(err)
			}
			defer sock.Close()
			var fds []int
			if tt.fds != nil {
				fds = tt.fds(t)
			}
			sent := make(chan error, 1)
			go func() { sent <- send(sock.Path(), tt.data, fds) }()
			m, err := sock.Receive(5 * time.Second)
			if serr := <-sent; serr != nil {
				t.Fatalf("send: %v", serr)
			}
			if tt.wantErr != "" {
				if err == nil {
					m.Close()
					t.Fatalf("Receive took a master; want an error with %q", tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Receive: %v; want an error with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			// The received master is the sent one's: its slave echoes.
			if _, err := m.Write([]byte("ping\n")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 64)
			n, err := m.Read(buf)
			if err != nil || !strings.Contains(string(buf[:n]), "ping") {
				t.Fatalf("the received master read %q, %v", buf[:n], err)
			}
		})
	}
}

func TestSocketReceiveTimesOut(t *testing.T) {
	sock, err := NewSocket()
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	start := time.Now()
	_, err = sock.Receive(100 * time.Millisecond)
	if !errors.Is(err, os.ErrDeadlineExceeded) || !strings.Contains(err.Error(), "within 100ms") {
		t.Fatalf("Receive with nobody sending: %v; want a deadline error that names the timeout", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Receive returned after %s", d)
	}
	if err := sock.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sock.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the socket outlives Close: %v", err)
	}
}

// send connects to path and sends data with fds, closing fds afterwards.
func send(path, data string, fds []int) error {
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	conn, err := net.Dial("unix", path)
	if err != nil {
		return err
	}
	defer conn.Close()
	if data == "" && len(fds) == 0 {
		return nil
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	_, _, err = conn.(*net.UnixConn).WriteMsgUnix([]byte(data), oob, nil)
	return err
}

// ptyMasterFd is a new pty's master; the slave stays open for the test,
// with echo on.
func ptyMasterFd(t *testing.T) []int {
	m, slave := openPty(t)
	t.Cleanup(func() { slave.Close() })
	fd, err := dupOf(m.f)
	m.Close()
	if err != nil {
		t.Fatal(err)
	}
	return []int{fd}
}

func pipeFd(t *testing.T) []int {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	fd, err := dupOf(r)
	if err != nil {
		t.Fatal(err)
	}
	return []int{fd}
}

func twoFds(t *testing.T) []int { return append(ptyMasterFd(t), pipeFd(t)...) }

func dupOf(f *os.File) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd, dupErr := -1, error(nil)
	if err := rc.Control(func(raw uintptr) { fd, dupErr = unix.FcntlInt(raw, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	return fd, dupErr
}
