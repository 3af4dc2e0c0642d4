package criu_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"github.com/ckpt-dev/ckpt/runtime/criu"
)

// A counter is dumped and restored twice through the session; it continues
// counting from where it was, and CRIU's notifications arrive in its
// documented order, with the restored root's pid where CRIU sends one.
func TestCounterContinuesAcrossCycles(t *testing.T) {
	requireCRIU(t)
	cases := []struct {
		name         string
		cloneflags   uintptr
		dumpOrder    []string
		restoreOrder []string
		// restoredOrder is the order when restoring a restored tree.
		restoredOrder []string
	}{
		{
			name:          "host namespaces",
			dumpOrder:     []string{"pre-dump", "query-ext-files", "post-dump"},
			restoreOrder:  []string{"pre-restore", "post-restore(pid)", "pre-resume", "post-resume"},
			restoredOrder: []string{"pre-restore", "setup-namespaces(pid)", "post-setup-namespaces", "post-restore(pid)", "pre-resume", "post-resume"},
		},
		{
			name:         "own pid, uts, ipc and net namespaces",
			cloneflags:   syscall.CLONE_NEWPID | syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC | syscall.CLONE_NEWNET,
			dumpOrder:    []string{"pre-dump", "network-lock", "query-ext-files", "post-dump"},
			restoreOrder: []string{"pre-restore", "setup-namespaces(pid)", "post-setup-namespaces", "post-restore(pid)", "network-unlock", "pre-resume", "post-resume"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			cmd := startCounter(t, out, tc.cloneflags)
			pid := cmd.Process.Pid
			for cycle := 1; cycle <= 2; cycle++ {
				dir, d := imageDir(t)
				var dl stageLog
				s := start(t, filepath.Join(dir, "dump.log"))
				if _, err := s.Dump(context.Background(), dumpOpts(d, pid), dl.handler(nil)); err != nil {
					t.Fatalf("cycle %d dump: %v", cycle, err)
				}
				// The dumped tree is gone; collect our child so its pid is free.
				if cycle == 1 {
					cmd.Wait()
				} else {
					reap(pid)
				}
				if alive(pid) {
					t.Fatalf("cycle %d: pid %d still alive after dump", cycle, pid)
				}
				if got := dl.get(); !reflect.DeepEqual(got, tc.dumpOrder) {
					t.Errorf("cycle %d dump stages = %v, want %v", cycle, got, tc.dumpOrder)
				}
				before := lastCount(t, out)

				var rl stageLog
				var nsPid, rstPid int
				h := &criu.Handlers{
					SetupNamespaces: func(_ context.Context, p int) error { nsPid = p; return nil },
					PostRestore:     func(_ context.Context, p int) error { rstPid = p; return nil },
				}
				s = start(t, filepath.Join(dir, "restore.log"))
				got, err := s.Restore(context.Background(), restoreOpts(d), rl.handler(h))
				if err != nil {
					t.Fatalf("cycle %d restore: %v", cycle, err)
				}
				t.Cleanup(func() { reap(got) })
				if got != rstPid || (tc.cloneflags != 0 && got != nsPid) {
					t.Errorf("restored pid %d, post-restore pid %d, setup-namespaces pid %d: want all equal", got, rstPid, nsPid)
				}
				if tc.cloneflags == 0 && got != pid {
					t.Errorf("restored pid %d, want the original %d", got, pid)
				}
				pid = got
				want := tc.restoreOrder
				if cycle > 1 && tc.cloneflags == 0 {
					// CRIU restores into a new time namespace (monotonic
					// clocks go on), so from the second cycle on the tree
					// has a namespace of its own to set up.
					want = tc.restoredOrder
				}
				if order := rl.get(); !reflect.DeepEqual(order, want) {
					t.Errorf("cycle %d restore stages = %v, want %v", cycle, order, want)
				}
				waitFor(t, "the restored counter to count on", func() bool { return lastCount(t, out) > before+3 })
				assertContinuous(t, out)
			}
		})
	}
}

// Answering post-dump with failure cancels the checkpoint: the process keeps
// running and the error names the stage, the reason and CRIU's message.
func TestFailedPostDumpLeavesProcessRunning(t *testing.T) {
	requireCRIU(t)
	out := filepath.Join(t.TempDir(), "out")
	cmd := startCounter(t, out, 0)
	dir, d := imageDir(t)
	s := start(t, filepath.Join(dir, "dump.log"))
	veto := errors.New("checkpoint vetoed by test")
	_, err := s.Dump(context.Background(), dumpOpts(d, cmd.Process.Pid), &criu.Handlers{
		PostDump: func(context.Context) error { return veto },
	})
	if !errors.Is(err, veto) {
		t.Fatalf("err = %v, want the handler's error", err)
	}
	for _, want := range []string{"at post-dump", "checkpoint vetoed by test", "criu says"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	before := lastCount(t, out)
	waitFor(t, "the counter to go on after the failed dump", func() bool { return lastCount(t, out) > before+3 })
	if !alive(cmd.Process.Pid) {
		t.Fatal("process died")
	}
	assertContinuous(t, out)
}

// Restoring corrupted images fails with CRIU's own message and the log's
// Error lines, and leaves no process behind.
func TestCorruptedImagesFailClearly(t *testing.T) {
	requireCRIU(t)
	out := filepath.Join(t.TempDir(), "out")
	cmd := startCounter(t, out, 0)
	pid := cmd.Process.Pid
	dir, d := imageDir(t)
	if _, err := start(t, "").Dump(context.Background(), dumpOpts(d, pid), nil); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	// Truncate the process tree image: CRIU cannot know what to restore.
	if err := os.WriteFile(filepath.Join(dir, "pstree.img"), []byte{0x01, 0x02}, 0o644); err != nil {
		t.Fatal(err)
	}
	s := start(t, filepath.Join(dir, "restore.log"))
	_, err := s.Restore(context.Background(), restoreOpts(d), nil)
	var ce *criu.Error
	if !errors.As(err, &ce) {
		t.Fatalf("err = %v, want *criu.Error", err)
	}
	if ce.Message == "" || len(ce.LogLines) == 0 {
		t.Errorf("error carries no CRIU message or log lines: %v", err)
	}
	if !strings.Contains(err.Error(), "criu says") || !strings.Contains(err.Error(), "Error (") {
		t.Errorf("error does not quote CRIU: %v", err)
	}
	time.Sleep(50 * time.Millisecond)
	if alive(pid) {
		reap(pid)
		t.Errorf("pid %d is alive after a failed restore", pid)
	}
}

// The criu pid is known before the first request (so a caller can move it
// into a cgroup), and the descriptors in ExtraFiles reach criu at InheritFD.
func TestStartHandsOverPidAndFiles(t *testing.T) {
	requireCRIU(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	var seen int
	var link string
	s, err := criu.Start(context.Background(), criu.Config{
		ExtraFiles: []*os.File{w},
		OnStart: func(pid int) error {
			seen = pid
			link, err = os.Readlink(filepathJoin("/proc", pid, "fd", int(criu.InheritFD(0))))
			return err
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if seen != s.Pid() || seen == 0 {
		t.Errorf("OnStart saw pid %d, session pid %d", seen, s.Pid())
	}
	st, _ := w.Stat()
	if !strings.HasPrefix(link, "pipe:") || st == nil {
		t.Errorf("criu fd %d is %q, want our pipe", criu.InheritFD(0), link)
	}
	if _, err := s.Capabilities(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// Cancelling a dump rolls it back instead of killing criu (a criu killed
// while its parasite runs in the tasks can take them down): criu's next
// notification is answered with failure, CRIU resumes the tasks and
// exits, and the dumped counter goes on.
func TestCancelRollsBackDump(t *testing.T) {
	requireCRIU(t)
	out := filepath.Join(t.TempDir(), "out")
	cmd := startCounter(t, out, 0)
	dir, d := imageDir(t)
	s := start(t, filepath.Join(dir, "dump.log"))
	ctx, cancel := context.WithCancel(context.Background())
	_, err := s.Dump(ctx, dumpOpts(d, cmd.Process.Pid), &criu.Handlers{
		PreDump: func(ctx context.Context) error { cancel(); <-ctx.Done(); return ctx.Err() },
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if strings.Contains(err.Error(), "criu killed") {
		t.Errorf("criu was killed, not rolled back: %v", err)
	}
	s.Close()
	if alive(s.Pid()) {
		t.Error("criu still alive after the session's end")
	}
	before := lastCount(t, out)
	waitFor(t, "the counter to survive the cancelled dump", func() bool { return lastCount(t, out) > before+2 })
}

// Pages go to a page server started through the session (as for a
// migration); the other images stay local. Together they restore a counter
// that continues.
func TestDumpThroughPageServer(t *testing.T) {
	requireCRIU(t)
	out := filepath.Join(t.TempDir(), "out")
	cmd := startCounter(t, out, 0)
	local, ld := imageDir(t)
	remote, rd := imageDir(t)

	ps := start(t, filepath.Join(remote, "page-server.log"))
	psPid, port, err := ps.PageServer(context.Background(), &rpc.CriuOpts{
		ImagesDirFd: ptr(int32(rd.Fd())), LogFile: ptr("page-server.log"), LogLevel: ptr(int32(4)),
		Ps: &rpc.CriuPageServerInfo{Address: ptr("127.0.0.1"), Port: ptr(int32(0))},
	}, false)
	if err != nil {
		t.Fatal(err)
	}
	if port == 0 {
		t.Fatalf("page server answered no port (pid %d)", psPid)
	}
	if psPid != 0 {
		t.Cleanup(func() { syscall.Kill(psPid, syscall.SIGKILL) })
	}

	opts := dumpOpts(ld, cmd.Process.Pid)
	opts.Ps = &rpc.CriuPageServerInfo{Address: ptr("127.0.0.1"), Port: ptr(int32(port))}
	if _, err := start(t, filepath.Join(local, "dump.log")).Dump(context.Background(), opts, nil); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if _, err := os.Stat(filepath.Join(local, "pages-1.img")); err == nil {
		t.Error("pages were written locally, not to the page server")
	}
	// Bring the local images next to the pages, as a migration would.
	ents, _ := os.ReadDir(local)
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(local, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(remote, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	before := lastCount(t, out)
	pid, err := start(t, filepath.Join(remote, "restore.log")).Restore(context.Background(), restoreOpts(rd), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reap(pid) })
	waitFor(t, "the migrated counter to count on", func() bool { return lastCount(t, out) > before+3 })
	assertContinuous(t, out)
}

// Pre-dump needs soft-dirty memory tracking. Where the kernel lacks it the
// capability says so and a pre-dump fails with CRIU's reason.
func TestPreDumpFollowsMemTrack(t *testing.T) {
	requireCRIU(t)
	out := filepath.Join(t.TempDir(), "out")
	cmd := startCounter(t, out, 0)
	caps, err := criu.Probe(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	parent, pd := imageDir(t)
	s := start(t, filepath.Join(parent, "dump.log"))
	opts := dumpOpts(pd, cmd.Process.Pid)
	opts.TrackMem = ptr(true)
	err = s.SinglePreDump(context.Background(), opts)
	if caps.PreDump() {
		if err != nil {
			t.Fatalf("pre-dump with memory tracking available: %v", err)
		}
		if _, err := os.Stat(filepath.Join(parent, "pagemap-"+strconv.Itoa(cmd.Process.Pid)+".img")); err != nil {
			t.Errorf("pre-dump wrote no pagemap: %v", err)
		}
	} else {
		if err == nil {
			t.Fatal("pre-dump succeeded on a kernel without soft-dirty tracking")
		}
		t.Logf("pre-dump refused as expected here: %v", err)
		var ce *criu.Error
		if !errors.As(err, &ce) || (ce.Message == "" && len(ce.LogLines) == 0) {
			t.Errorf("error does not carry CRIU's reason: %v", err)
		}
	}
	before := lastCount(t, out)
	waitFor(t, "the counter to go on after the pre-dump", func() bool { return lastCount(t, out) > before+2 })
}
