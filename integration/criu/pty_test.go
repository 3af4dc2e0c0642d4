package criu_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ckpt-dev/ckpt/integration/internal/testutil"
	"github.com/ckpt-dev/ckpt/runtime/criu"
	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// shellLoop runs each line typed on its terminal and marks where output ends.
const shellLoop = `while read -r l; do eval "$l"; echo "<done>"; done`

// A shell on a pty slave is dumped and restored with orphan_pts_master: the
// new master arrives through the session, typed input reaches the shell,
// and the terminal keeps the window size it had at dump time.
func TestRestoredPtyAnswersInput(t *testing.T) {
	requireCRIU(t)
	master, slave, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	want := pty.Winsize{Rows: 33, Cols: 111}
	if err := pty.Setsize(master, &want); err != nil {
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
	if out := converse(t, master, "echo before-$((6*7))"); !strings.Contains(out, "before-42") {
		t.Fatalf("shell before dump answered %q", out)
	}

	dir, d := imageDir(t)
	if _, err := start(t, filepath.Join(dir, "dump.log")).Dump(context.Background(), dumpOpts(d, cmd.Process.Pid), nil); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	master.Close() // the old terminal is gone; the restored shell gets a new one

	var restored *os.File
	h := &criu.Handlers{OrphanPtsMaster: func(_ context.Context, m *os.File) error {
		restored = m
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
	defer restored.Close()
	if out := converse(t, restored, "echo after-$((6*7))"); !strings.Contains(out, "after-42") {
		t.Fatalf("restored shell answered %q", out)
	}
	if out := converse(t, restored, "stty size"); !strings.Contains(out, "33 111") {
		t.Errorf("restored terminal size: stty size said %q, want 33 111", out)
	}
}

// converse types a line on the master and returns what comes back up to the
// shell loop's end marker.
func converse(t *testing.T, master *os.File, line string) string {
	t.Helper()
	if _, err := master.Write([]byte(line + "\n")); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	buf := make([]byte, 4096)
	deadline := time.Now().Add(5 * time.Second)
	fd := int(master.Fd())
	for !strings.Contains(out.String(), "<done>") {
		if time.Now().After(deadline) {
			t.Fatalf("no answer to %q; got %q", line, out.String())
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if n, _ := unix.Poll(fds, 100); n <= 0 {
			continue
		}
		n, err := unix.Read(fd, buf)
		if err != nil {
			t.Fatalf("read master: %v (got %q)", err, out.String())
		}
		out.Write(buf[:n])
	}
	return out.String()
}
