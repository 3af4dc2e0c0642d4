package shim

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ckpt-dev/ckpt/console"
	"github.com/ckpt-dev/ckpt/runtime/image"
	"github.com/containerd/containerd/v2/pkg/stdio"
	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// fifos makes FIFOs named as given in a temp dir.
func fifos(t *testing.T, names ...string) []string {
	t.Helper()
	dir := t.TempDir()
	var paths []string
	for _, n := range names {
		p := filepath.Join(dir, n)
		if err := unix.Mkfifo(p, 0o600); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	return paths
}

// clientReader opens a FIFO's read end as containerd's client does:
// without waiting for a writer.
func clientReader(t *testing.T, path string) *os.File {
	t.Helper()
	r, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// readUntil reads r until want appeared or 10s passed, riding out the
// moments a FIFO has no writer (EOF), and returns what came.
func readUntil(t *testing.T, r *os.File, want string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	r.SetReadDeadline(deadline)
	var got bytes.Buffer
	buf := make([]byte, 4096)
	for !strings.Contains(got.String(), want) {
		n, err := r.Read(buf)
		got.Write(buf[:n])
		switch {
		case err == io.EOF && time.Now().Before(deadline):
			time.Sleep(5 * time.Millisecond)
		case err != nil && err != io.EOF:
			t.Fatalf("no %q; read %q, then %v", want, got.String(), err)
		}
	}
	return got.String()
}

// FIFOs as containerd's client makes them: output reaches the client's
// reader, typed input reaches the process, and CloseIO plus the client's
// close give the process EOF.
func TestProcIOFifos(t *testing.T) {
	paths := fifos(t, "stdin", "stdout")
	in, out := paths[0], paths[1]
	clientOut := clientReader(t, out)
	defer clientOut.Close()

	pio, err := newProcIO(context.Background(), stdio.Stdio{Stdin: in, Stdout: out}, os.Getuid(), os.Getgid(), "c1")
	if err != nil {
		t.Fatal(err)
	}
	defer pio.close()
	if err := pio.start(); err != nil {
		t.Fatal(err)
	}
	clientIn, err := os.OpenFile(in, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	procIn, procOut := pio.pipes.child[0], pio.pipes.child[1]

	procOut.WriteString("hello client\n")
	line, err := bufio.NewReader(clientOut).ReadString('\n')
	if err != nil || line != "hello client\n" {
		t.Fatalf("client read %q, %v", line, err)
	}

	clientIn.WriteString("typed\n")
	procIn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	n, err := procIn.Read(buf)
	if err != nil || string(buf[:n]) != "typed\n" {
		t.Fatalf("process read %q, %v", buf[:n], err)
	}

	pio.closeStdin()
	clientIn.Close()
	procIn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := procIn.Read(buf); err != io.EOF {
		t.Fatalf("after CloseIO and the client's close: read %q, %v; want EOF", buf[:n], err)
	}

	procOut.Close()
	pio.pipes.child[1] = nil
	done := make(chan struct{})
	go func() { pio.wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the output copy did not end with the process's stdout")
	}
}

// A client that detaches from stdout does not block the process (the shim
// holds no read end), and a client that attaches again gets later output.
func TestProcIODetachedClient(t *testing.T) {
	out := fifos(t, "stdout")[0]
	client := clientReader(t, out)
	pio, err := newProcIO(context.Background(), stdio.Stdio{Stdout: out}, os.Getuid(), os.Getgid(), "c1")
	if err != nil {
		t.Fatal(err)
	}
	defer pio.close()
	if err := pio.start(); err != nil {
		t.Fatal(err)
	}
	procOut := pio.pipes.child[1]
	procOut.WriteString("attached\n")
	readUntil(t, client, "attached\n")
	client.Close()

	// Far more than the pipe and the FIFO hold together.
	procOut.SetWriteDeadline(time.Now().Add(10 * time.Second))
	chunk := bytes.Repeat([]byte("x"), 64<<10)
	for i := 0; i < 64; i++ {
		if _, err := procOut.Write(chunk); err != nil {
			t.Fatalf("the process blocked on its output after %d KiB without a client: %v", i*64, err)
		}
	}

	client = clientReader(t, out)
	defer client.Close()
	// Until the shim has drained the backlog, "later" may take a moment.
	procOut.WriteString("later\n")
	readUntil(t, client, "later\n")
}

// A terminal process: a size asked for before the master arrives is set
// when it does, typed input reaches the shell through the stdin FIFO and
// its answers come out of the stdout FIFO, and CloseIO ends its input.
func TestProcIOTerminal(t *testing.T) {
	if _, err := os.Stat("/bin/busybox"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("CI: needs /bin/busybox (run scripts/setup.sh)")
		}
		t.Skip("SKIPPED, NOT TESTED: needs /bin/busybox (run scripts/setup.sh)")
	}
	paths := fifos(t, "stdin", "stdout")
	clientOut := clientReader(t, paths[1])
	defer clientOut.Close()
	p := newProcess(nil, "e1", stdio.Stdio{Stdin: paths[0], Stdout: paths[1], Terminal: true})
	var err error
	if p.io, err = newProcIO(context.Background(), p.stdio, os.Getuid(), os.Getgid(), "c1"); err != nil {
		t.Fatal(err)
	}
	defer p.io.close()
	if p.io.pipes != nil {
		t.Fatal("a terminal process got pipes")
	}
	if err := p.resize(pty.Winsize{Rows: 31, Cols: 101}); err != nil {
		t.Fatal(err)
	}
	if ws := p.windowSize(); ws != nil {
		t.Fatalf("a window size %+v before the master arrived", ws)
	}

	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/bin/busybox", "sh")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tty.Close()
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	probe := dupFd(t, ptmx)
	master, err := console.MasterFromFile(ptmx)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.io.attachConsole(master); err != nil {
		t.Fatal(err)
	}

	clientIn, err := os.OpenFile(paths[0], os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	clientIn.WriteString("stty size; echo $((6*7))x\n")
	got := readUntil(t, clientOut, "42x")
	if !strings.Contains(got, "31 101") {
		t.Errorf("stty size in %q, want 31 101", got)
	}
	if ws := p.windowSize(); ws == nil || *ws != (image.WindowSize{Rows: 31, Cols: 101}) {
		t.Errorf("windowSize = %+v", ws)
	}

	// As a user's ^D would, the EOF comes at the prompt. Typed while the
	// shell still ran echo, in canonical mode, it would be lost: busybox's
	// line editing then turns ICANON off, and the kernel hands the EOF it
	// had marked to the raw reader as a NUL byte.
	waitRawMode(t, probe)
	p.io.closeStdin()
	clientIn.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("shell after CloseIO: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the shell did not see the end of its input after CloseIO")
	}
}

// dupFd is a descriptor of f's for ioctls, closed with the test. Not
// through f.Fd(), which would switch the shared file to blocking mode.
func dupFd(t *testing.T, f *os.File) int {
	t.Helper()
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd, dupErr := -1, error(nil)
	if err := rc.Control(func(raw uintptr) { fd, dupErr = unix.FcntlInt(raw, unix.F_DUPFD_CLOEXEC, 0) }); err != nil || dupErr != nil {
		t.Fatalf("duplicate %s: %v %v", f.Name(), err, dupErr)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// waitRawMode waits (2 s at most: a shell without line editing reads in
// canonical mode) for the terminal's reader to turn ICANON off, as a line
// editor does before it prints its prompt. Termios ioctls on a master act
// on its slave's settings.
func waitRawMode(t *testing.T, master int) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		tio, err := unix.IoctlGetTermios(master, unix.TCGETS)
		if err != nil {
			t.Fatalf("read the terminal's settings: %v", err)
		}
		if tio.Lflag&unix.ICANON == 0 {
			return
		}
	}
}

// The masters of a restore: the one runtime/container says is the init's
// goes to the console, others are closed (their terminals hang up).
func TestTakeRestoredMaster(t *testing.T) {
	for _, initFirst := range []bool{true, false} {
		t.Run(fmt.Sprintf("init first %v", initFirst), func(t *testing.T) {
			var masters, slaves [2]*os.File
			for i := range masters {
				m, s, err := pty.Open()
				if err != nil {
					t.Fatal(err)
				}
				masters[i], slaves[i] = m, s
				defer s.Close()
			}
			pio, err := newProcIO(context.Background(), stdio.Stdio{Terminal: true}, 0, 0, "c1")
			if err != nil {
				t.Fatal(err)
			}
			defer pio.close()
			order := []int{0, 1}
			if !initFirst {
				order = []int{1, 0}
			}
			for _, i := range order {
				if err := pio.takeRestoredMaster(masters[i], i == 1); err != nil {
					t.Fatalf("take master %d: %v", i, err)
				}
			}
			if m := pio.console.Master(); m == nil || m.String() != slaves[1].Name() {
				t.Fatalf("the console holds %v, want %s", m, slaves[1].Name())
			}
			if _, err := slaves[0].Write([]byte("x")); err == nil {
				t.Errorf("the other terminal %s still has its master", slaves[0].Name())
			}
		})
	}
}
