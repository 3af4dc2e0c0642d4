package console

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// attached makes a console with stdin typed through a pipe and output
// collected, and attaches m.
func attached(t *testing.T, m *Master) (c *Console, typed *os.File, out *outputBuffer) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	out = &outputBuffer{}
	c = New(context.Background(), r, out)
	t.Cleanup(func() { w.Close(); c.Close() })
	if err := c.Attach(m); err != nil {
		t.Fatal(err)
	}
	return c, w, out
}

// Typed bytes reach the shell on the slave, the terminal echoes them, and
// the shell's answer comes back.
func TestConsoleTypedInputIsAnswered(t *testing.T) {
	m, _ := onSlave(t, "sh", "-i")
	_, typed, out := attached(t, m)
	typed.WriteString("echo answer-$((6*7))\n")
	waitOutput(t, out, "echo answer-$((6*7))") // the echo of what was typed
	waitOutput(t, out, "answer-42")
}

// A size requested before the master arrives is applied when it does; a
// later one at once. stty on the slave sees both.
func TestConsoleResize(t *testing.T) {
	m, _ := onSlave(t, "sh", "-i")
	r, typed, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer typed.Close()
	out := &outputBuffer{}
	c := New(context.Background(), r, out)
	defer c.Close()
	if _, err := c.Size(); !errors.Is(err, ErrNoMaster) {
		t.Fatalf("Size before Attach: %v, want ErrNoMaster", err)
	}
	if err := c.Resize(pty.Winsize{Rows: 27, Cols: 93}); err != nil {
		t.Fatal(err)
	}
	if err := c.Attach(m); err != nil {
		t.Fatal(err)
	}
	typed.WriteString("stty size\n")
	waitOutput(t, out, "27 93")

	if err := c.Resize(pty.Winsize{Rows: 44, Cols: 132}); err != nil {
		t.Fatal(err)
	}
	typed.WriteString("stty size\n")
	waitOutput(t, out, "44 132")
	if ws, err := c.Size(); err != nil || ws.Rows != 44 || ws.Cols != 132 {
		t.Fatalf("Size = %+v, %v", ws, err)
	}
	if ws, ok := c.RequestedSize(); !ok || ws.Rows != 44 {
		t.Fatalf("RequestedSize = %+v, %v", ws, ok)
	}
}

// The slave side going away ends the output copy cleanly, with all the
// output there.
func TestConsoleSlaveExitEndsCopy(t *testing.T) {
	m, proc := onSlave(t, "sh", "-c", "echo last words; exit 0")
	out := &outputBuffer{}
	c := New(context.Background(), nil, out)
	defer c.Close()
	if err := c.Attach(m); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Wait: %v, want nil at the terminal's end", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the copy did not end with the slave side")
	}
	if ok, err := proc.exited(5 * time.Second); !ok || err != nil {
		t.Fatalf("shell: exited %v, %v", ok, err)
	}
	if !strings.Contains(out.String(), "last words") {
		t.Fatalf("output %q", out.String())
	}
}

// A console takes one master; a second one is refused and closed.
func TestConsoleRefusesSecondMaster(t *testing.T) {
	a, aSlave := openPty(t)
	defer aSlave.Close()
	b, bSlave := openPty(t)
	defer bSlave.Close()
	c := New(context.Background(), nil, nil)
	defer c.Close()
	if err := c.Attach(a); err != nil {
		t.Fatal(err)
	}
	err := c.Attach(b)
	if !errors.Is(err, ErrAttached) || !strings.Contains(err.Error(), b.String()) {
		t.Fatalf("second Attach: %v; want ErrAttached naming %s", err, b)
	}
	if _, err := b.Write([]byte("x")); !errors.Is(err, os.ErrClosed) {
		t.Errorf("the refused master is still open (write: %v)", err)
	}
	if c.Master() != a {
		t.Errorf("the console's master changed")
	}
}

// CloseStdin (containerd's CloseIO) ends a cat reading the terminal, once
// the client has closed its end of the input FIFO too, after a whole line
// or a partial one; before CloseStdin a client that closes does not end
// the input.
func TestConsoleCloseStdinEndsCat(t *testing.T) {
	for _, tt := range []struct{ name, typed string }{
		{"after a line", "abc\n"},
		{"after a partial line", "abc"},
		{"with nothing typed", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m, proc := onSlave(t, "cat")
			fifo := filepath.Join(t.TempDir(), "stdin")
			if err := unix.Mkfifo(fifo, 0o600); err != nil {
				t.Fatal(err)
			}
			in, err := OpenInput(fifo)
			if err != nil {
				t.Fatal(err)
			}
			out := &outputBuffer{}
			c := New(context.Background(), in, out)
			defer c.Close()
			if err := c.Attach(m); err != nil {
				t.Fatal(err)
			}
			client, err := os.OpenFile(fifo, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			client.WriteString(tt.typed)
			client.Close()
			if ok, _ := proc.exited(300 * time.Millisecond); ok {
				t.Fatal("cat ended when the client closed, before CloseStdin")
			}
			if err := c.CloseStdin(); err != nil {
				t.Fatal(err)
			}
			ok, err := proc.exited(5 * time.Second)
			if !ok {
				t.Fatalf("cat still runs after CloseStdin; output %q", out.String())
			}
			if err != nil {
				t.Fatalf("cat: %v", err)
			}
			if err := c.Wait(); err != nil {
				t.Fatal(err)
			}
			// Once echoed by the terminal, once written by cat.
			if want := strings.TrimSuffix(tt.typed, "\n"); want != "" && strings.Count(out.String(), want) < 2 {
				t.Errorf("output %q: cat did not get %q", out.String(), want)
			}
		})
	}
}

// A stdout FIFO whose reader goes away blocks neither the copy nor the
// process: it keeps producing far beyond what the pipe and the terminal
// can buffer, and a reader that comes back gets the later output.
func TestConsoleDetachedReaderDoesNotBlockProcess(t *testing.T) {
	dir := t.TempDir()
	fifo, progress := filepath.Join(dir, "stdout"), filepath.Join(dir, "progress")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	// 1000-byte lines, so that the buffers (a 64 KiB pipe, the pty's,
	// the copy's 32 KiB) hold a few hundred lines at most. The counter
	// also goes to a file every 20 lines, which shows progress while
	// nobody reads.
	const script = `pad=$(printf '%0990d' 0); i=0
while :; do i=$((i+1)); echo "$i $pad"; [ $((i % 20)) -eq 0 ] && echo $i > "$0"; done`
	m, _ := onSlave(t, "sh", "-c", script, progress)
	reader := openReader(t, fifo)
	out, err := OpenOutput(context.Background(), fifo)
	if err != nil {
		t.Fatal(err)
	}
	c := New(context.Background(), nil, out)
	defer c.Close()
	if err := c.Attach(m); err != nil {
		t.Fatal(err)
	}

	before := lastCounter(t, reader, 10)
	reader.Close()

	target := before + 3000
	waitFor(t, 30*time.Second, "progress past "+strconv.Itoa(target)+" without a reader", func() bool {
		b, _ := os.ReadFile(progress)
		n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return n >= target
	})

	reader = openReader(t, fifo)
	defer reader.Close()
	if after := lastCounter(t, reader, target); after < target {
		t.Fatalf("the returning reader got line %d, want one past %d", after, target)
	}
}

// lastCounter reads counter lines until one is at least min, and returns it.
func lastCounter(t *testing.T, r *os.File, min int) int {
	t.Helper()
	r.SetReadDeadline(time.Now().Add(10 * time.Second))
	sc := bufio.NewScanner(patientReader{r})
	sc.Buffer(make([]byte, 4096), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 || len(f[1]) != 990 {
			continue // a partial line
		}
		if n, err := strconv.Atoi(f[0]); err == nil && n >= min {
			return n
		}
	}
	t.Fatalf("no counter line past %d: %v", min, sc.Err())
	return 0
}

// patientReader reads a FIFO through the moments it has no writer (EOF),
// until the read deadline.
type patientReader struct{ f *os.File }

func (p patientReader) Read(b []byte) (int, error) {
	for {
		n, err := p.f.Read(b)
		if err != io.EOF {
			return n, err
		}
		time.Sleep(5 * time.Millisecond)
	}
}
