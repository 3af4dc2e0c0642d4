package criu_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"github.com/ckpt-dev/ckpt/integration/internal/testutil"
	"github.com/ckpt-dev/ckpt/runtime/criu"
	"golang.org/x/sys/unix"
)

func ptr[T any](v T) *T { return &v }

func requireCRIU(t *testing.T) {
	t.Helper()
	testutil.Require(t, "root", "criu", "iptables-restore", testutil.BusyboxPath)
}

// counterScript prints 1, 2, 3, ... one line every 20ms. The value lives in
// the shell's memory, so a restored shell continues where it was. It waits
// with read's timeout on a FIFO instead of forking sleep: no short-lived
// children whose pids a restore could find still taken.
const counterScript = `exec 3<>"$0"; i=0; while :; do i=$((i+1)); echo $i; read -t 0.02 -u 3 x; done`

// startCounter runs the counter as a session leader writing to out, in new
// namespaces when cloneflags says so.
func startCounter(t *testing.T, out string, cloneflags uintptr) *exec.Cmd {
	t.Helper()
	f, err := os.OpenFile(out, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fifo := out + ".fifo"
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(testutil.BusyboxPath, "sh", "-c", counterScript, fifo)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Cloneflags: cloneflags}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitFor(t, "the counter to count", func() bool { return lastCount(t, out) >= 3 })
	return cmd
}

// counts returns the numbers the counter printed.
func counts(t *testing.T, out string) []int {
	t.Helper()
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var n []int
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if v, err := strconv.Atoi(l); err == nil {
			n = append(n, v)
		}
	}
	return n
}

func lastCount(t *testing.T, out string) int {
	n := counts(t, out)
	if len(n) == 0 {
		return 0
	}
	return n[len(n)-1]
}

// assertContinuous checks the counter never restarted or skipped: the output
// is exactly 1..N.
func assertContinuous(t *testing.T, out string) {
	t.Helper()
	n := counts(t, out)
	for i, v := range n {
		if v != i+1 {
			t.Fatalf("counter output broken at line %d: got %d, want %d (it restarted or lost state)", i+1, v, i+1)
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func alive(pid int) bool {
	if unix.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	f := strings.Fields(string(b))
	return len(f) > 2 && f[2] != "Z"
}

// reap kills and waits a restored tree root that is our child (rst_sibling).
func reap(pid int) {
	unix.Kill(pid, unix.SIGKILL)
	var ws unix.WaitStatus
	unix.Wait4(pid, &ws, 0, nil)
}

// imageDir opens a fresh images dir; CRIU opens it through our fd.
func imageDir(t *testing.T) (string, *os.File) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "images")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return dir, f
}

func dumpOpts(d *os.File, pid int) *rpc.CriuOpts {
	return &rpc.CriuOpts{
		ImagesDirFd: ptr(int32(d.Fd())), LogFile: ptr("dump.log"), LogLevel: ptr(int32(4)),
		Pid: ptr(int32(pid)), OrphanPtsMaster: ptr(true),
	}
}

func restoreOpts(d *os.File) *rpc.CriuOpts {
	return &rpc.CriuOpts{
		ImagesDirFd: ptr(int32(d.Fd())), LogFile: ptr("restore.log"), LogLevel: ptr(int32(4)),
		RstSibling: ptr(true), OrphanPtsMaster: ptr(true),
	}
}

func start(t *testing.T, logFile string) *criu.Session {
	t.Helper()
	s, err := criu.Start(context.Background(), criu.Config{LogFile: logFile})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// stageLog records the stages CRIU announced, with their pids.
type stageLog struct {
	mu     sync.Mutex
	stages []string
}

func (l *stageLog) handler(extra *criu.Handlers) *criu.Handlers {
	h := &criu.Handlers{}
	if extra != nil {
		*h = *extra
	}
	h.Any = func(_ context.Context, n *criu.Notification) error {
		l.mu.Lock()
		defer l.mu.Unlock()
		s := string(n.Stage)
		if n.Pid != 0 {
			s += "(pid)"
		}
		l.stages = append(l.stages, s)
		return nil
	}
	return h
}

func (l *stageLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.stages...)
}

func filepathJoin(parts ...any) string {
	var s []string
	for _, p := range parts {
		switch v := p.(type) {
		case string:
			s = append(s, v)
		case int:
			s = append(s, strconv.Itoa(v))
		}
	}
	return filepath.Join(s...)
}
