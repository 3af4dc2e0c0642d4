package runc_test

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/ckpt-dev/ckpt/runtime/container"
	"github.com/ckpt-dev/ckpt/runtime/image"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// TestTerminal checkpoints a container with a terminal (its pty master is
// outside, with whoever took it from runc's console socket) and restores
// it: CRIU hands the new master over orphan-pts-master, with the recorded
// window size, and the counter goes on on the new terminal.
func TestTerminal(t *testing.T) {
	c := newCtr(t, func(s *specs.Spec) { s.Process.Terminal = true })
	sock := filepath.Join(t.TempDir(), "console.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	masters := make(chan *os.File, 1)
	go func() {
		conn, err := l.AcceptUnix()
		if err != nil {
			return
		}
		defer conn.Close()
		buf, oob := make([]byte, 4096), make([]byte, unix.CmsgSpace(4))
		_, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
		if err != nil {
			return
		}
		msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
		if len(msgs) == 1 {
			if fds, _ := unix.ParseUnixRights(&msgs[0]); len(fds) == 1 {
				masters <- os.NewFile(uintptr(fds[0]), "master")
			}
		}
	}()
	out := c.openOut()
	if o, err := command(t, "runc", "--root", c.root, "run", "-d", "--console-socket", sock, "--bundle", c.bundle, c.id).CombinedOutput(); err != nil {
		t.Fatalf("runc run: %v: %s", err, o)
	}
	first := <-masters
	copied := copyTo(out, first)
	c.waitCount(3)

	// Without a size given, the checkpoint records the terminal's own.
	setWinsize(t, first, 20, 70)
	md, err := container.Checkpoint(ctx(t), container.CheckpointOptions{
		Root: c.root, ID: c.id, ImagePath: filepath.Join(t.TempDir(), "images"), LeaveRunning: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if ws := md.WindowSize; ws == nil || ws.Rows != 20 || ws.Cols != 70 {
		t.Errorf("recorded window size %+v, want 20x70", ws)
	}

	dir := filepath.Join(t.TempDir(), "images")
	md, err = container.Checkpoint(ctx(t), container.CheckpointOptions{
		Root: c.root, ID: c.id, ImagePath: dir, WindowSize: &image.WindowSize{Rows: 33, Cols: 111},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !md.Terminal {
		t.Error("checkpoint does not record the terminal")
	}
	first.Close()
	<-copied
	before := c.last()

	opts := c.restoreOpts(dir, c.id)
	got := make(chan *os.File, 1)
	opts.Console = func(m *os.File, init bool) error {
		if !init {
			t.Errorf("the only restored pty master is not the init's")
		}
		got <- m
		return nil
	}
	if _, err := container.Restore(ctx(t), opts); err != nil {
		t.Fatal(err)
	}
	m := <-got
	defer m.Close()
	copyTo(out, m)
	c.waitCount(before + 5)
	c.assertContinuous()
	rc, err := m.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var ws *unix.Winsize
	rc.Control(func(fd uintptr) { ws, err = unix.IoctlGetWinsize(int(fd), unix.TIOCGWINSZ) })
	if err != nil || ws.Row != 33 || ws.Col != 111 {
		t.Errorf("window size after restore: %v: %+v", err, ws)
	}
}

func setWinsize(t *testing.T, f *os.File, rows, cols uint16) {
	t.Helper()
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	rc.Control(func(fd uintptr) {
		err = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols})
	})
	if err != nil {
		t.Fatal(err)
	}
}

func copyTo(w io.Writer, r io.Reader) <-chan struct{} {
	done := make(chan struct{})
	go func() { io.Copy(w, r); close(done) }()
	return done
}
