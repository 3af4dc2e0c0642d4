package criu

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
)

type event struct {
	stage Stage
	pid   int
}

// recorder is a Handlers that records every stage it sees.
func recorder(events *[]event) *Handlers {
	rec := func(s Stage) func(context.Context) error {
		return func(context.Context) error { *events = append(*events, event{stage: s}); return nil }
	}
	recPid := func(s Stage) func(context.Context, int) error {
		return func(_ context.Context, pid int) error { *events = append(*events, event{s, pid}); return nil }
	}
	return &Handlers{
		PreDump: rec(PreDump), PostDump: rec(PostDump), NetworkLock: rec(NetworkLock),
		NetworkUnlock: rec(NetworkUnlock), PreRestore: rec(PreRestore),
		SetupNamespaces: recPid(SetupNamespaces), PostSetupNamespaces: rec(PostSetupNamespaces),
		PostRestore: recPid(PostRestore), PreResume: rec(PreResume), PostResume: rec(PostResume),
		StatusReady: rec(StatusReady), PreStream: rec(PreStream),
		QueryExtFiles: func(context.Context) ([]string, error) {
			*events = append(*events, event{stage: QueryExtFiles})
			return nil, nil
		},
		OrphanPtsMaster: func(_ context.Context, f *os.File) error {
			*events = append(*events, event{stage: OrphanPtsMaster})
			return f.Close()
		},
		Unknown: func(_ context.Context, n *Notification) error {
			*events = append(*events, event{n.Stage, n.Pid})
			return nil
		},
	}
}

// Every stage reaches its typed handler with its pid, in CRIU's order, and
// each is answered with success.
func TestDoDispatchesEveryStage(t *testing.T) {
	script := []event{
		{PreDump, 0}, {NetworkLock, 0}, {QueryExtFiles, 0}, {PostDump, 0}, {NetworkUnlock, 0},
		{StatusReady, 0}, {PreStream, 0},
		{PreRestore, 0}, {SetupNamespaces, 101}, {PostSetupNamespaces, 0}, {OrphanPtsMaster, 0},
		{PostRestore, 101}, {PreResume, 0}, {PostResume, 0}, {"post-something-new", 7},
	}
	s, p, _ := newTestSession(t, "")
	// The peer is done, its pipes closed, before the test ends: a later
	// test counts this process's descriptors.
	peerDone := make(chan struct{})
	defer func() { <-peerDone }()
	go func() {
		defer close(peerDone)
		if req := p.recv(); req.GetType() != rpc.CriuReqType_RESTORE {
			t.Errorf("peer got %v, want RESTORE", req.GetType())
		}
		for _, e := range script {
			var sent, ours []*os.File
			if e.stage == OrphanPtsMaster {
				r, w, _ := os.Pipe()
				sent, ours = []*os.File{w}, []*os.File{r, w}
			}
			ans := p.notify(e.stage, int32(e.pid), sent...)
			closeAll(ours)
			if ans.GetType() != rpc.CriuReqType_NOTIFY || !ans.GetNotifySuccess() {
				t.Errorf("%s answered %v success=%v", e.stage, ans.GetType(), ans.GetNotifySuccess())
			}
		}
		p.send(&rpc.CriuResp{Type: rpc.CriuReqType_RESTORE.Enum(), Success: ptr(true),
			Restore: &rpc.CriuRestoreResp{Pid: ptr(int32(101))}})
	}()
	var got []event
	pid, err := s.Restore(context.Background(), opts(), recorder(&got))
	if err != nil {
		t.Fatal(err)
	}
	if pid != 101 {
		t.Errorf("pid = %d, want 101", pid)
	}
	if len(got) != len(script) {
		t.Fatalf("got %d events %v, want %d", len(got), got, len(script))
	}
	for i := range script {
		if got[i] != script[i] {
			t.Errorf("event %d = %v, want %v", i, got[i], script[i])
		}
	}
}

// The pty master attached to orphan-pts-master reaches the handler as a
// working descriptor.
func TestOrphanPtsMasterDeliversFD(t *testing.T) {
	s, p, _ := newTestSession(t, "")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	go func() {
		p.recv()
		p.notify(OrphanPtsMaster, 0, w)
		w.Close()
		p.final(rpc.CriuReqType_RESTORE, true, 0, "")
	}()
	h := &Handlers{OrphanPtsMaster: func(_ context.Context, f *os.File) error {
		defer f.Close()
		_, err := f.Write([]byte("through the fd"))
		return err
	}}
	if _, err := s.Restore(context.Background(), opts(), h); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, _ := r.Read(buf)
	if string(buf[:n]) != "through the fd" {
		t.Errorf("read %q through the received fd", buf[:n])
	}
}

// Descriptors that no handler takes, or that come in unexpected numbers,
// are closed and never leak.
func TestDescriptorsAreNeverLeaked(t *testing.T) {
	pipes := func(n int) []*os.File {
		var fs []*os.File
		for i := 0; i < n; i++ {
			r, w, _ := os.Pipe()
			r.Close()
			fs = append(fs, w)
		}
		return fs
	}
	cases := []struct {
		name    string
		stage   Stage
		fds     int
		h       *Handlers
		success bool
	}{
		{"fd on a stage that takes none", PostRestore, 1, &Handlers{}, true},
		{"two masters in one message", OrphanPtsMaster, 2, &Handlers{OrphanPtsMaster: func(_ context.Context, f *os.File) error { return f.Close() }}, false},
		{"master with no console", OrphanPtsMaster, 1, &Handlers{}, false},
		{"master notification without fd", OrphanPtsMaster, 0, &Handlers{OrphanPtsMaster: func(_ context.Context, f *os.File) error { return f.Close() }}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := openFDs(t)
			func() {
				s, p, _ := newTestSession(t, "")
				done := make(chan bool, 1)
				go func() {
					p.recv()
					files := pipes(tc.fds)
					ans := p.notify(tc.stage, 5, files...)
					closeAll(files)
					done <- ans.GetNotifySuccess()
					p.final(rpc.CriuReqType_RESTORE, tc.success, 0, "")
				}()
				_, err := s.Restore(context.Background(), opts(), tc.h)
				if ok := <-done; ok != tc.success {
					t.Errorf("notify_success = %v, want %v", ok, tc.success)
				}
				if (err == nil) != tc.success {
					t.Errorf("err = %v, want success=%v", err, tc.success)
				}
				s.Close()
				p.close()
			}()
			noNewFDs(t, before)
		})
	}
}

// A handler's failure is answered with notify_success=false, the session
// reads on to CRIU's final response, and the error names the stage, the
// handler's error, cr_errmsg/cr_errno and the log's Error lines.
func TestHandlerFailureReportsEverything(t *testing.T) {
	logFile := filepath.Join(t.TempDir(), "dump.log")
	os.WriteFile(logFile, []byte("(00.001) Warn (criu/x.c:1): meh\n(00.002) Error (criu/cr-dump.c:2043): Post dump script passed with 255\n(00.003) Dumping finished\n"), 0o644)
	s, p, _ := newTestSession(t, logFile)
	cancelled := errors.New("operator said no")
	go func() {
		p.recv()
		if ans := p.notify(PreDump, 0); !ans.GetNotifySuccess() {
			t.Error("pre-dump refused")
		}
		if ans := p.notify(PostDump, 0); ans.GetNotifySuccess() {
			t.Error("post-dump accepted, want refused")
		}
		p.notify(NetworkUnlock, 0)
		p.final(rpc.CriuReqType_DUMP, false, 5, "Post dump script passed with 255")
	}()
	_, err := s.Dump(context.Background(), opts(), &Handlers{
		PostDump: func(context.Context) error { return cancelled },
	})
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("err = %v, want *Error", err)
	}
	if !errors.Is(err, cancelled) {
		t.Error("errors.Is(handler error) = false")
	}
	for _, want := range []string{"criu DUMP failed at post-dump", "operator said no", "Post dump script passed with 255", "errno 5", logFile, "Error (criu/cr-dump.c:2043)"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "Warn") {
		t.Errorf("error quotes non-error log lines: %q", err)
	}
}

// CRIU ignores a refused pre-resume and reports success: the caller must
// still hear about the failure.
func TestIgnoredFailureStillReturned(t *testing.T) {
	s, p, _ := newTestSession(t, "")
	go func() {
		p.recv()
		p.notify(PreResume, 0)
		p.send(&rpc.CriuResp{Type: rpc.CriuReqType_RESTORE.Enum(), Success: ptr(true), Restore: &rpc.CriuRestoreResp{Pid: ptr(int32(9))}})
	}()
	pid, err := s.Restore(context.Background(), opts(), &Handlers{PreResume: func(context.Context) error { return errors.New("startContainer hook failed") }})
	var ce *Error
	if !errors.As(err, &ce) || !ce.Succeeded || ce.Stage != PreResume {
		t.Fatalf("err = %#v, want Succeeded at pre-resume", err)
	}
	if pid != 9 {
		t.Errorf("pid = %d, want 9 (the caller must be able to kill the tree)", pid)
	}
}

// CRIU dying mid-session (EOF) is an error that says so, with the handler
// error if one came before.
func TestEOFMidSession(t *testing.T) {
	s, p, proc := newTestSession(t, "")
	go func() {
		p.recv()
		p.notify(PreRestore, 0)
		proc.exit(1)
		p.close()
	}()
	_, err := s.Restore(context.Background(), opts(), nil)
	if err == nil || !strings.Contains(err.Error(), "exited with status 1 before answering") {
		t.Fatalf("err = %v", err)
	}
}

func TestMalformedMessages(t *testing.T) {
	defer func(old int) { maxMessage = old }(maxMessage)
	maxMessage = 4096
	cases := []struct {
		name string
		send func(p *peer)
		want string
	}{
		{"oversized", func(p *peer) { p.sendRaw(make([]byte, maxMessage+1)) }, "exceeds"},
		{"too many descriptors", func(p *peer) {
			var fs []*os.File
			for i := 0; i < maxFDs+4; i++ {
				f, _ := os.Open("/dev/null")
				fs = append(fs, f)
			}
			b, _ := (&rpc.CriuResp{Type: rpc.CriuReqType_NOTIFY.Enum(), Success: ptr(true), Notify: &rpc.CriuNotify{Script: ptr("post-restore")}}).MarshalVT()
			p.sendRaw(b, fs...)
			closeAll(fs)
		}, "truncated"},
		{"garbage", func(p *peer) { p.sendRaw([]byte{0xff, 0xff, 0xff}) }, "decode"},
		{"wrong response type", func(p *peer) { p.final(rpc.CriuReqType_EMPTY, false, 22, "Unsupported request") }, "answered EMPTY"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := openFDs(t)
			s, p, _ := newTestSession(t, "")
			sent := make(chan struct{})
			go func() { p.recv(); tc.send(p); close(sent) }()
			_, err := s.Dump(context.Background(), opts(), nil)
			<-sent
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			s.Close()
			p.close()
			noNewFDs(t, before)
		})
	}
}

// A handler may hold its reply; CRIU waits and gets the answer only when the
// handler returns (restore across containerd's Create and Start).
func TestHeldReply(t *testing.T) {
	s, p, _ := newTestSession(t, "")
	release := make(chan struct{})
	held := make(chan int)
	answered := make(chan time.Time, 1)
	go func() {
		p.recv()
		ans := p.notify(SetupNamespaces, 77)
		answered <- time.Now()
		if !ans.GetNotifySuccess() {
			t.Error("held reply answered false")
		}
		p.final(rpc.CriuReqType_RESTORE, true, 0, "")
	}()
	go func() {
		pid := <-held
		if pid != 77 {
			t.Errorf("held pid = %d", pid)
		}
		select {
		case <-answered:
			t.Error("criu got its answer while the handler held it")
		case <-time.After(100 * time.Millisecond):
		}
		close(release)
	}()
	_, err := s.Restore(context.Background(), opts(), &Handlers{SetupNamespaces: func(ctx context.Context, pid int) error {
		held <- pid
		<-release
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
}

// Cancelling the context kills criu, unblocks a pending receive or a held
// handler, and says so.
func TestCancellation(t *testing.T) {
	for _, where := range []string{"receive", "handler"} {
		t.Run(where, func(t *testing.T) {
			s, p, proc := newTestSession(t, "")
			ctx, cancel := context.WithCancel(context.Background())
			go func() {
				p.recv()
				if where == "handler" {
					p.notify(SetupNamespaces, 3)
				}
			}()
			h := &Handlers{SetupNamespaces: func(ctx context.Context, pid int) error {
				<-ctx.Done()
				return ctx.Err()
			}}
			time.AfterFunc(50*time.Millisecond, cancel)
			_, err := s.Restore(ctx, opts(), h)
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("err = %v, want context.Canceled", err)
			}
			if !proc.wasKilled() {
				t.Error("criu not killed")
			}
		})
	}
}

// query-ext-files may answer with externals for CRIU to add.
func TestQueryExtFilesAnswer(t *testing.T) {
	s, p, _ := newTestSession(t, "")
	go func() {
		p.recv()
		ans := p.notify(QueryExtFiles, 0)
		if got := ans.GetOpts().GetExternal(); len(got) != 1 || got[0] != "file[42:7]" {
			t.Errorf("externals = %v", got)
		}
		p.final(rpc.CriuReqType_DUMP, true, 0, "")
	}()
	_, err := s.Dump(context.Background(), opts(), &Handlers{QueryExtFiles: func(context.Context) ([]string, error) {
		return []string{"file[42:7]"}, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
}

// VERSION and FEATURE_CHECK keep criu open and report what CRIU said, not
// what was asked.
func TestCapabilitiesOnOneProcess(t *testing.T) {
	s, p, _ := newTestSession(t, "")
	s.path = "" // not cached
	go func() {
		req := p.recv()
		if req.GetType() != rpc.CriuReqType_VERSION || !req.GetKeepOpen() {
			t.Errorf("first request %v keep_open=%v", req.GetType(), req.GetKeepOpen())
		}
		p.send(&rpc.CriuResp{Type: rpc.CriuReqType_VERSION.Enum(), Success: ptr(true),
			Version: &rpc.CriuVersion{MajorNumber: ptr(int32(4)), MinorNumber: ptr(int32(1)), Sublevel: ptr(int32(1))}})
		req = p.recv()
		if req.GetType() != rpc.CriuReqType_FEATURE_CHECK || !req.GetKeepOpen() || req.GetFeatures() == nil {
			t.Errorf("second request %v keep_open=%v features=%v", req.GetType(), req.GetKeepOpen(), req.GetFeatures())
		}
		p.send(&rpc.CriuResp{Type: rpc.CriuReqType_FEATURE_CHECK.Enum(), Success: ptr(true),
			Features: &rpc.CriuFeatures{MemTrack: ptr(false), LazyPages: ptr(true)}})
		if req = p.recv(); req.GetType() != rpc.CriuReqType_CHECK {
			t.Errorf("third request %v", req.GetType())
		}
		p.final(rpc.CriuReqType_CHECK, true, 0, "")
	}()
	c, err := s.Capabilities(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if c.Version.String() != "4.1.1" || c.Version.Int() != 40101 || c.PreDump() || !c.Features.LazyPages || !c.SinglePreDump() {
		t.Errorf("capabilities = %+v", c)
	}
	if err := s.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestErrorUnwrapsCause(t *testing.T) {
	e := &Error{Request: "DUMP", Cause: io.ErrUnexpectedEOF}
	if !errors.Is(e, io.ErrUnexpectedEOF) {
		t.Error("cause not reachable")
	}
}

// CRIU's cr_errmsg is its first Error line; a benign one must not hide the
// real reason.
func TestBenignFirstErrorIsSkipped(t *testing.T) {
	logFile := filepath.Join(t.TempDir(), "restore.log")
	os.WriteFile(logFile, []byte("(00.02) Error (criu/util.c:1533): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted\n(00.03) Error (criu/cr-restore.c:1230): Can't fork for 19355: File exists\n"), 0o644)
	e := &Error{Request: "RESTORE", Message: "rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted", LogFile: logFile, LogLines: errorLines(logFile)}
	msg := e.Error()
	if !strings.Contains(msg, "criu says: Error (criu/cr-restore.c:1230): Can't fork for 19355") || strings.Contains(msg, "rlimit") {
		t.Errorf("error = %q", msg)
	}
}

// Iterative migration: several PRE_DUMPs and the final DUMP go to one criu,
// which waits for the next request after each pre-dump.
func TestIterativePreDumpOnOneProcess(t *testing.T) {
	s, p, _ := newTestSession(t, "")
	go func() {
		for _, want := range []rpc.CriuReqType{rpc.CriuReqType_PRE_DUMP, rpc.CriuReqType_PRE_DUMP, rpc.CriuReqType_DUMP} {
			req := p.recv()
			if req.GetType() != want {
				t.Errorf("got %v, want %v", req.GetType(), want)
				return
			}
			if want == rpc.CriuReqType_DUMP {
				p.notify(PostDump, 0)
				p.final(want, true, 0, "")
				return
			}
			p.send(&rpc.CriuResp{Type: want.Enum(), Success: ptr(true)})
		}
	}()
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		if err := s.PreDump(ctx, opts()); err != nil {
			t.Fatalf("pre-dump %d: %v", i, err)
		}
		if s.finished {
			t.Fatal("session marked finished after a pre-dump")
		}
	}
	var dumped bool
	if _, err := s.Dump(ctx, opts(), &Handlers{PostDump: func(context.Context) error { dumped = true; return nil }}); err != nil {
		t.Fatal(err)
	}
	if !dumped || !s.finished {
		t.Errorf("dumped=%v finished=%v", dumped, s.finished)
	}
	if err := s.Close(); err != nil {
		t.Errorf("close after a clean dump: %v", err)
	}
}

// An interrupted dump is not cut short: criu's next notification is
// answered with failure (CRIU resumes the tasks), no handler runs, criu
// ends by itself, and the error says the dump was interrupted. A criu that
// reaches no notification within the grace is killed.
func TestDumpCancellationRollsBack(t *testing.T) {
	for _, tc := range []struct {
		name       string
		notify     bool
		wantKilled bool
	}{
		{"rolled back at post-dump", true, false},
		{"no notification within the grace", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, p, proc := newTestSession(t, "")
			s.limits.Grace = 300 * time.Millisecond
			ctx, cancel := context.WithCancel(context.Background())
			answered := make(chan bool, 1)
			go func() {
				p.recv()
				p.notify(PreDump, 0)
				cancel()
				if !tc.notify {
					return
				}
				time.Sleep(100 * time.Millisecond) // criu writes the memory
				answered <- p.notify(PostDump, 0).GetNotifySuccess()
				p.final(rpc.CriuReqType_DUMP, false, 0, "")
				proc.exit(1)
			}()
			ran := false
			_, err := s.Dump(ctx, opts(), &Handlers{PostDump: func(context.Context) error { ran = true; return nil }})
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("err = %v, want context.Canceled", err)
			}
			if proc.wasKilled() != tc.wantKilled {
				t.Errorf("criu killed = %v, want %v (err: %v)", proc.wasKilled(), tc.wantKilled, err)
			}
			if tc.notify {
				if <-answered {
					t.Error("post-dump answered with success after the interrupt")
				}
				if ran {
					t.Error("the post-dump handler ran after the interrupt")
				}
			} else if !strings.Contains(err.Error(), "no point to roll back") {
				t.Errorf("error does not say why criu was killed: %v", err)
			}
		})
	}
}

// Once a lazy dump reported status-ready its parasite is gone and criu
// only serves pages: an interrupt kills criu at once, not after the grace.
func TestLazyDumpCancelledAfterStatusReady(t *testing.T) {
	s, p, proc := newTestSession(t, "")
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		p.recv()
		p.notify(PreDump, 0)
		p.notify(PostDump, 0)
		// status-ready's answer is not read: criu serves pages until
		// killed, and the test may be over by then.
		p.send(&rpc.CriuResp{Type: rpc.CriuReqType_NOTIFY.Enum(), Success: ptr(true), Notify: &rpc.CriuNotify{Script: ptr(string(StatusReady))}})
	}()
	ready := make(chan struct{})
	go func() { <-ready; cancel() }()
	start := time.Now()
	_, err := s.Dump(ctx, opts(), &Handlers{StatusReady: func(context.Context) error { close(ready); return nil }})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if !proc.wasKilled() {
		t.Error("criu not killed")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %s: waited for the grace", d)
	}
}
