package criu_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/ckpt-dev/ckpt/runtime/criu"
	"golang.org/x/sys/unix"
)

// A pages image cut short makes CRIU 4.2.1 loop on "Advanced iov 0 bytes",
// writing its log at tens of MB/s, forever. ckpt checks images before
// CRIU sees them (runtime/image); the session's watchdog is the bound for
// what no check catches: here with CRIU given the truncated image itself,
// the log limit kills criu and the half-restored tree in bounded time.
func TestTruncatedPagesBounded(t *testing.T) {
	requireCRIU(t)
	for _, tc := range []struct {
		name   string
		limits criu.Limits
		want   error
	}{
		{"log limit", criu.Limits{MaxLog: 8 << 20, Stall: time.Minute}, criu.ErrLogLimit},
		{"no progress", criu.Limits{MaxLog: 1 << 40, Stall: 2 * time.Second}, criu.ErrStalled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			cmd := startCounter(t, out, 0)
			pid := cmd.Process.Pid
			dir, d := imageDir(t)
			if _, err := start(t, "").Dump(context.Background(), dumpOpts(d, pid), nil); err != nil {
				t.Fatal(err)
			}
			cmd.Wait()
			pages, _ := filepath.Glob(filepath.Join(dir, "pages-*.img"))
			if len(pages) == 0 {
				t.Fatal("no pages image")
			}
			if err := os.Truncate(pages[0], 5000); err != nil {
				t.Fatal(err)
			}
			logFile := filepath.Join(dir, "restore.log")
			s, err := criu.Start(context.Background(), criu.Config{LogFile: logFile, Limits: tc.limits})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			start := time.Now()
			done := make(chan error, 1)
			go func() { _, err := s.Restore(context.Background(), restoreOpts(d), nil); done <- err }()
			select {
			case err = <-done:
			case <-time.After(60 * time.Second):
				t.Fatal("restore of a truncated pages image hangs")
			}
			t.Logf("after %s: %v", time.Since(start).Round(time.Millisecond), err)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			// The limit is checked every 100 ms: some overshoot.
			if fi, err := os.Stat(logFile); err == nil && tc.want == criu.ErrLogLimit && fi.Size() > 4*tc.limits.MaxLog {
				t.Errorf("log grew to %d bytes", fi.Size())
			}
			// Nothing left: criu, and the tree's first task (our child,
			// running criu's code, holding the log open).
			time.Sleep(100 * time.Millisecond)
			if alive(pid) {
				reap(pid)
				t.Errorf("restored pid %d is alive", pid)
			}
			if h := holders(logFile); len(h) > 0 {
				t.Errorf("processes %v still hold %s", h, logFile)
			}
		})
	}
}

// holders are the processes that have path open.
func holders(path string) []int {
	var out []int
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		fds, _ := os.ReadDir("/proc/" + p.Name() + "/fd")
		for _, fd := range fds {
			if l, _ := os.Readlink("/proc/" + p.Name() + "/fd/" + fd.Name()); l == path {
				var ws unix.WaitStatus
				if got, _ := unix.Wait4(pid, &ws, unix.WNOHANG, nil); got != pid {
					out = append(out, pid)
				}
				break
			}
		}
	}
	return out
}
