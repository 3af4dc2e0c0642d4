package shim

import (
	"bufio"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/stdio"
	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// FIFOs as containerd's client makes them: output reaches the client's
// reader, typed input reaches the process, and CloseIO plus the client's
// close give the process EOF.
func TestProcIOFifos(t *testing.T) {
	dir := t.TempDir()
	in, out := filepath.Join(dir, "stdin"), filepath.Join(dir, "stdout")
	for _, f := range []string{in, out} {
		if err := unix.Mkfifo(f, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// The client's ends (non-blocking opens, as containerd's fifo package).
	clientOut, err := os.OpenFile(out, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer clientOut.Close()

	pio, err := newProcIO(stdio.Stdio{Stdin: in, Stdout: out}, os.Getuid(), os.Getgid())
	if err != nil {
		t.Fatal(err)
	}
	defer pio.close()
	if err := pio.start(context.Background()); err != nil {
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

// The console socket takes the master runc sends; the window size goes
// through without making the master blocking.
func TestConsoleSocket(t *testing.T) {
	sock, err := newConsoleSocket()
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	master, slave, err := pty.Open()
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	defer slave.Close()

	go func() {
		defer master.Close()
		conn, err := net.Dial("unix", sock.Path())
		if err != nil {
			return
		}
		defer conn.Close()
		rights := unix.UnixRights(int(master.Fd()))
		conn.(*net.UnixConn).WriteMsgUnix([]byte("/dev/ptmx"), rights, nil)
	}()
	got, err := sock.receive(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	if err := setWinsize(got, WindowSize{Rows: 21, Cols: 61}); err != nil {
		t.Fatal(err)
	}
	ws, err := getWinsize(got)
	if err != nil || ws != (WindowSize{Rows: 21, Cols: 61}) {
		t.Fatalf("window size %+v, %v", ws, err)
	}
	slaveWs, err := unix.IoctlGetWinsize(int(slave.Fd()), unix.TIOCGWINSZ)
	if err != nil || slaveWs.Row != 21 || slaveWs.Col != 61 {
		t.Fatalf("slave sees %+v, %v", slaveWs, err)
	}

	// Output, then EIO (all slaves closed) reads as the end.
	slave.WriteString("from the slave\n")
	slave.Close()
	data, err := io.ReadAll(ptyReader{got})
	if err != nil {
		t.Fatalf("read the master: %v", err)
	}
	if string(data) != "from the slave\r\n" {
		t.Fatalf("master read %q", data)
	}
}
