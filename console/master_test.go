package console

import (
	"errors"
	"fmt"
	"io"
	"os"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// Two masters have distinct numbers, and each is its slave's.
func TestMasterNumbersAreDistinct(t *testing.T) {
	a, aSlave := openPty(t)
	defer a.Close()
	defer aSlave.Close()
	b, bSlave := openPty(t)
	defer b.Close()
	defer bSlave.Close()
	if a.Number() == b.Number() {
		t.Fatalf("two masters share the number %d", a.Number())
	}
	for _, c := range []struct {
		m     *Master
		slave *os.File
	}{{a, aSlave}, {b, bSlave}} {
		if want := fmt.Sprintf("/dev/pts/%d", c.m.Number()); c.slave.Name() != want || c.m.String() != want {
			t.Errorf("master %s (number %d) belongs to slave %s", c.m, c.m.Number(), c.slave.Name())
		}
	}
}

func TestMasterFromFdRefusesOtherFiles(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	fd, err := unix.Dup(int(r.Fd()))
	r.Close()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := MasterFromFd(fd); err == nil {
		t.Fatal("a pipe was taken for a pty master")
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); !errors.Is(err, unix.EBADF) {
		t.Errorf("the refused descriptor is still open (fcntl: %v)", err)
	}
}

// The window size goes through without making the master blocking: after
// SetSize and Size, Close still ends a pending Read. With Fd() (creack/pty's
// Setsize) the Read would hang.
func TestMasterSizeKeepsItNonBlocking(t *testing.T) {
	m, slave := openPty(t)
	defer slave.Close()
	want := pty.Winsize{Rows: 21, Cols: 61}
	if err := m.SetSize(want); err != nil {
		t.Fatal(err)
	}
	if got, err := m.Size(); err != nil || got != want {
		t.Fatalf("Size = %+v, %v; want %+v", got, err, want)
	}
	if ws, err := unix.IoctlGetWinsize(int(slave.Fd()), unix.TIOCGWINSZ); err != nil || ws.Row != 21 || ws.Col != 61 {
		t.Fatalf("the slave sees %+v, %v", ws, err)
	}
	readErr := make(chan error, 1)
	go func() {
		_, err := m.Read(make([]byte, 16))
		readErr <- err
	}()
	time.Sleep(50 * time.Millisecond)
	m.Close()
	select {
	case err := <-readErr:
		if !errors.Is(err, os.ErrClosed) {
			t.Errorf("read after Close: %v, want os.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end a pending Read: the master is blocking")
	}
}

// Output, then EIO once the slave is closed, which reads as the end.
func TestMasterReadEndsWithSlave(t *testing.T) {
	m, slave := openPty(t)
	defer m.Close()
	slave.WriteString("from the slave\n")
	slave.Close()
	data, err := io.ReadAll(m)
	if err != nil {
		t.Fatalf("read the master: %v", err)
	}
	if string(data) != "from the slave\r\n" {
		t.Fatalf("master read %q", data)
	}
}
