package criu_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ckpt-dev/ckpt/console"
	"github.com/ckpt-dev/ckpt/integration/internal/testutil"
	"github.com/ckpt-dev/ckpt/runtime/criu"
	"github.com/creack/pty"
)

// shellLoop runs each line typed on its terminal and marks where output ends.
const shellLoop = `while read -r l; do eval "$l"; echo "<done>"; done`

// A shell on a pty slave is dumped and restored with orphan_pts_master: the
// new master arrives through the session and is attached with console at
// once, as the shim does; typed input reaches the shell, its answers come
// back, and the terminal keeps the window size it had at dump time.
func TestRestoredPtyAnswersInput(t *testing.T) {
	requireCRIU(t)
	ptmx, slave, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	master, err := console.MasterFromFile(ptmx)
	if err != nil {
		t.Fatal(err)
	}
	want := pty.Winsize{Rows: 33, Cols: 111}
	if err := master.SetSize(want); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(testutil.BusyboxPath, "sh", "-c", shellLoop)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	before := newTerminal(t, master)
	if out := before.converse(t, "echo before-$((6*7))"); !strings.Contains(out, "before-42") {
		t.Fatalf("shell before dump answered %q", out)
	}

	dir, d := imageDir(t)
	if _, err := start(t, filepath.Join(dir, "dump.log")).Dump(context.Background(), dumpOpts(d, cmd.Process.Pid), nil); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	before.Close() // the old terminal is gone; the restored shell gets a new one

	var (
		mu       sync.Mutex
		restored *terminal
	)
	h := &criu.Handlers{OrphanPtsMaster: func(_ context.Context, f *os.File) error {
		m, err := console.MasterFromFile(f)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		if restored != nil {
			m.Close()
			t.Errorf("a second pty master arrived: %s", m)
			return nil
		}
		restored = newTerminal(t, m)
		return nil
	}}
	pid, err := start(t, filepath.Join(dir, "restore.log")).Restore(context.Background(), restoreOpts(d), h)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reap(pid) })
	if restored == nil {
		t.Fatal("no pty master arrived with orphan-pts-master")
	}
	if out := restored.converse(t, "echo after-$((6*7))"); !strings.Contains(out, "after-42") {
		t.Fatalf("restored shell answered %q", out)
	}
	if ws, err := restored.Size(); err != nil || ws.Rows != want.Rows || ws.Cols != want.Cols {
		t.Errorf("restored master's window size %+v, %v; want %dx%d", ws, err, want.Cols, want.Rows)
	}
	if out := restored.converse(t, "stty size"); !strings.Contains(out, "33 111") {
		t.Errorf("restored terminal size: stty size said %q, want 33 111", out)
	}
	// The console resizes the restored terminal as it does a fresh one.
	if err := restored.Resize(pty.Winsize{Rows: 44, Cols: 122}); err != nil {
		t.Fatal(err)
	}
	if out := restored.converse(t, "stty size"); !strings.Contains(out, "44 122") {
		t.Errorf("after Resize: stty size said %q, want 44 122", out)
	}
}

// terminal is a console attached to a master, typed into through a pipe,
// its output collected.
type terminal struct {
	*console.Console
	typed *os.File
	out   *lockedBuffer
}

func newTerminal(t *testing.T, m *console.Master) *terminal {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		m.Close()
		t.Fatal(err)
	}
	out := &lockedBuffer{}
	c := console.New(context.Background(), r, out)
	if err := c.Attach(m); err != nil {
		t.Fatal(err)
	}
	term := &terminal{Console: c, typed: w, out: out}
	t.Cleanup(func() { term.Close() })
	return term
}

func (term *terminal) Close() error {
	term.typed.Close()
	return term.Console.Close()
}

// converse types a line and returns the output from there up to the shell
// loop's end marker.
func (term *terminal) converse(t *testing.T, line string) string {
	t.Helper()
	from := len(term.out.String())
	if _, err := term.typed.WriteString(line + "\n"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		out := term.out.String()[from:]
		if strings.Contains(out, "<done>") {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("no answer to %q; got %q", line, out)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
