package console

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
)

// busybox is Debian's busybox-static, which scripts/setup.sh installs.
const busybox = "/bin/busybox"

// requireBusybox skips loudly without busybox, except in CI where it fails.
func requireBusybox(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(busybox); err == nil {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("CI: needs %s (run scripts/setup.sh)", busybox)
	}
	t.Skipf("SKIPPED, NOT TESTED: needs %s (run scripts/setup.sh)", busybox)
}

// openPty opens a pty pair; the master is a Master.
func openPty(t *testing.T) (*Master, *os.File) {
	t.Helper()
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Fatalf("open a pty: %v", err)
	}
	m, err := MasterFromFile(ptmx)
	if err != nil {
		tty.Close()
		t.Fatal(err)
	}
	return m, tty
}

// slaveProcess is a process on a pty slave.
type slaveProcess struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // once done is closed
}

// exited reports whether the process exits within timeout, and how.
func (p *slaveProcess) exited(timeout time.Duration) (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	case <-time.After(timeout):
		return false, nil
	}
}

// onSlave runs busybox with args on a new pty as its controlling terminal
// and stdio, and returns the pty's master.
func onSlave(t *testing.T, args ...string) (*Master, *slaveProcess) {
	t.Helper()
	requireBusybox(t)
	m, tty := openPty(t)
	cmd := exec.Command(busybox, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.Env = []string{"PS1=$ ", "PATH=/bin:/usr/bin", "TERM=dumb"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	if err := cmd.Start(); err != nil {
		m.Close()
		tty.Close()
		t.Fatal(err)
	}
	tty.Close()
	p := &slaveProcess{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.done
		m.Close()
	})
	return m, p
}

// outputBuffer collects a console's output.
type outputBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *outputBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *outputBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitOutput waits until b holds want.
func waitOutput(t *testing.T, b *outputBuffer, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(b.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the output after 10s; it is %q", want, b.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after %s", what, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
