package docker_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
)

// attachment is `docker attach` on a pty, as a user at a terminal runs it.
type attachment struct {
	name string
	cmd  *exec.Cmd
	pty  *os.File
	done chan struct{}

	mu  sync.Mutex
	out bytes.Buffer
}

func (e *engine) attach(t *testing.T, name string) *attachment {
	t.Helper()
	cmd := exec.Command(filepath.Join(e.bin, "docker"), "attach", name)
	cmd.Env = e.cliEnv()
	p, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 30, Cols: 100})
	if err != nil {
		t.Fatalf("docker attach %s on a pty: %v", name, err)
	}
	a := &attachment{name: name, cmd: cmd, pty: p, done: make(chan struct{})}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := p.Read(buf)
			a.mu.Lock()
			a.out.Write(buf[:n])
			a.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	go func() {
		cmd.Wait()
		close(a.done)
	}()
	t.Cleanup(a.close)
	return a
}

func (a *attachment) output() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.out.String()
}

// typeUntil types line until the terminal shows want: the first line may
// arrive before docker attach has connected, so it is typed again (the
// lines used are idempotent).
func (a *attachment) typeUntil(t *testing.T, line, want string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := a.pty.Write([]byte(line + "\r")); err != nil {
			t.Fatalf("type into docker attach %s: %v", a.name, err)
		}
		until := time.Now().Add(2 * time.Second)
		for time.Now().Before(until) {
			if strings.Contains(a.output(), want) {
				return
			}
			select {
			case <-a.done:
				t.Fatalf("docker attach %s ended; the terminal showed:\n%q", a.name, a.output())
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	t.Fatalf("the terminal of %s did not answer %q with %q; it showed:\n%q", a.name, line, want, a.output())
}

// detach types Docker's detach keys (ctrl-p ctrl-q); the container keeps
// running.
func (a *attachment) detach(t *testing.T) {
	t.Helper()
	a.pty.Write([]byte{0x10, 0x11})
	select {
	case <-a.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("docker attach %s did not detach on ctrl-p ctrl-q; the terminal showed:\n%q", a.name, a.output())
	}
	a.close()
}

func (a *attachment) close() {
	select {
	case <-a.done:
	default:
		a.cmd.Process.Kill()
		<-a.done
	}
	// Closing twice (detach, then cleanup) only returns os.ErrClosed.
	a.pty.Close()
}

// docker run -dit: the restored init's terminal answers typed input and
// keeps the shell's state.
func testTTY(t *testing.T, e *engine, rt runtimeCase) {
	name := rt.name + "-tty"
	e.must(t, "run", "-dit", "--name", name, "--runtime", rt.name, imageName, "sh")
	t.Cleanup(func() { e.docker("rm", "-f", name) })
	a := e.attach(t, name)
	a.typeUntil(t, "X=tty-state; echo ok-$((6*7))", "ok-42")
	a.detach(t)
	if !e.running(t, name) {
		t.Fatalf("%s stopped when docker attach detached", name)
	}
	e.must(t, "checkpoint", "create", name, "tty1")
	if e.running(t, name) {
		t.Fatalf("%s still runs after docker checkpoint create", name)
	}
	if !rt.restore(t, e, name, "tty1", false) {
		afterPeerFailure(t, e, name)
		return
	}
	a = e.attach(t, name)
	// $X is the restored shell's own variable.
	a.typeUntil(t, "echo $X-$((7*8))", "tty-state-56")
	a.detach(t)
	if out := e.must(t, "exec", name, "echo", "exec-works"); out != "exec-works" {
		t.Fatalf("docker exec in the restored %s: %q", name, out)
	}
	e.must(t, "stop", "--time", "1", name)
	e.must(t, "rm", name)
	e.gone(t, name)
}
