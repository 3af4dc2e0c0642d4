package criu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"golang.org/x/sys/unix"
)

// The progress rule: new messages are progress, repeats (with another
// timestamp) and silence are not, a handler's time never stalls.
func TestWatchdogRule(t *testing.T) {
	t0 := time.Unix(1000, 0)
	type step struct {
		after   time.Duration // since t0
		write   string
		handler *bool
		serve   bool
	}
	yes, no := true, false
	cases := []struct {
		name    string
		steps   []step
		at      time.Duration
		wantErr error
	}{
		{"new lines are progress", []step{
			{1 * time.Second, "(00.1) 1: Read 401000 1 pages\n", nil, false},
			{2 * time.Second, "(00.2) 1: Read 5e0000 2 pages\n", nil, false},
		}, 2500 * time.Millisecond, nil},
		{"a repeated line is not", []step{
			{500 * time.Millisecond, "(00.1) 1: Advanced iov 0 bytes\n", nil, false},
			{1500 * time.Millisecond, "(00.2) 1: Advanced iov 0 bytes\n(00.3) 1: Advanced iov 0 bytes\n", nil, false},
		}, 2 * time.Second, ErrStalled},
		{"a loop of two lines is not", []step{
			{100 * time.Millisecond, "(0.1) a\n(0.2) b\n", nil, false},
			{900 * time.Millisecond, "(0.3) a\n(0.4) b\n(0.5) a\n", nil, false},
			{1400 * time.Millisecond, "(0.6) b\n", nil, false},
		}, 1800 * time.Millisecond, ErrStalled},
		{"silence is not", nil, 1100 * time.Millisecond, ErrStalled},
		{"a half-written line waits for its end", []step{
			{900 * time.Millisecond, "(0.1) some", nil, false},
			{1000 * time.Millisecond, "thing new\n", nil, false},
		}, 1900 * time.Millisecond, nil},
		{"a handler's time does not count", []step{
			{100 * time.Millisecond, "", &yes, false},
		}, 10 * time.Second, nil},
		{"after the handler the clock starts again", []step{
			{100 * time.Millisecond, "", &yes, false},
			{5 * time.Second, "", &no, false},
		}, 6200 * time.Millisecond, ErrStalled},
		{"a lazy dump serving pages may be silent", []step{
			{100 * time.Millisecond, "(0.1) status-ready\n", nil, true},
		}, time.Hour, nil},
		{"but its log is still bounded", []step{
			{100 * time.Millisecond, "", nil, true},
			{200 * time.Millisecond, strings.Repeat("(0.1) x\n", 200), nil, false},
		}, 300 * time.Millisecond, ErrLogLimit},
		{"the log limit", []step{
			{100 * time.Millisecond, strings.Repeat("(0.1) x\n", 200), nil, false},
		}, 200 * time.Millisecond, ErrLogLimit},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			log := filepath.Join(t.TempDir(), "restore.log")
			w := newWatchdog(Limits{MaxLog: 1000, Stall: time.Second}, log, t0)
			f, err := os.Create(log)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			for _, s := range tc.steps {
				if s.write != "" {
					f.WriteString(s.write)
				}
				if s.handler != nil {
					w.handler(*s.handler, t0.Add(s.after))
				}
				if s.serve {
					w.serve()
				}
				if err := w.check(t0.Add(s.after)); err != nil && tc.wantErr == nil {
					t.Fatalf("at %s: %v", s.after, err)
				}
			}
			err = w.check(t0.Add(tc.at))
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("check = %v, want %v", err, tc.wantErr)
			}
		})
	}
}

// A log that was there before the request (an earlier request's) is not
// counted against this one.
func TestWatchdogIgnoresEarlierLog(t *testing.T) {
	log := filepath.Join(t.TempDir(), "restore.log")
	os.WriteFile(log, []byte(strings.Repeat("(0.1) old\n", 50)), 0o644)
	w := newWatchdog(Limits{MaxLog: 1000, Stall: time.Second}, log, time.Unix(0, 0))
	if err := w.check(time.Unix(0, 5e8)); err != nil {
		t.Fatal(err)
	}
}

// criu that loops writing the same log line is killed once the log passes
// the limit, and the request fails naming it.
func TestSessionLogLimit(t *testing.T) {
	log := filepath.Join(t.TempDir(), "restore.log")
	s, p, proc := newTestSession(t, log)
	s.limits = Limits{MaxLog: 64 << 10, Stall: time.Minute}
	go func() {
		p.recv()
		f, _ := os.Create(log)
		defer f.Close()
		for i := 0; i < 10000 && !proc.wasKilled(); i++ {
			fmt.Fprintf(f, "(00.%06d)      1: Advanced iov 0 bytes, 2->2 iovs, 0 tail\n", i)
			if i%100 == 0 {
				time.Sleep(5 * time.Millisecond)
			}
		}
	}()
	start := time.Now()
	_, err := s.Restore(context.Background(), opts(), nil)
	if !errors.Is(err, ErrLogLimit) || !strings.Contains(err.Error(), "Advanced iov 0 bytes") {
		t.Fatalf("err = %v, want the log limit naming the repeated line", err)
	}
	if !proc.wasKilled() {
		t.Error("criu was not killed")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %s", d)
	}
}

// criu that stops making progress is killed after the stall bound.
func TestSessionStall(t *testing.T) {
	s, p, proc := newTestSession(t, "")
	s.limits = Limits{Stall: 300 * time.Millisecond}
	go func() {
		p.recv()
		p.notify(PreRestore, 0) // progress, then nothing
	}()
	_, err := s.Restore(context.Background(), opts(), &Handlers{})
	if !errors.Is(err, ErrStalled) || !strings.Contains(err.Error(), "criu RESTORE failed") {
		t.Fatalf("err = %v, want a stall", err)
	}
	if !proc.wasKilled() {
		t.Error("criu was not killed")
	}
}

// criu that dies while the socket's peer end stays open (its children
// inherited it) fails the request at once, saying how criu ended; a final
// response sent just before a normal exit is still read.
func TestSessionCriuExit(t *testing.T) {
	cases := []struct {
		name string
		end  func(p *peer, proc *fakeProc)
		want string // "" = success
	}{
		{"killed by a signal", func(p *peer, proc *fakeProc) {
			proc.end(exitInfo{Status: -1, Signal: 9})
		}, "criu was killed by signal 9 (SIGKILL) before answering"},
		{"exited", func(p *peer, proc *fakeProc) { proc.exit(1) }, "criu exited with status 1 before answering"},
		{"answered, then exited", func(p *peer, proc *fakeProc) {
			p.send(&rpc.CriuResp{Type: rpc.CriuReqType_RESTORE.Enum(), Success: ptr(true), Restore: &rpc.CriuRestoreResp{Pid: ptr(int32(77))}})
			proc.exit(0)
		}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, p, proc := newTestSession(t, "")
			go func() {
				p.recv()
				p.notify(PreRestore, 0)
				tc.end(p, proc) // p's fd stays open: no EOF
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			pid, err := s.Restore(ctx, opts(), &Handlers{})
			if ctx.Err() != nil {
				t.Fatal("Restore waited for EOF")
			}
			if tc.want == "" {
				if err != nil || pid != 77 {
					t.Fatalf("pid %d, err %v", pid, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// A failure with a full disk: the error says so, with the errno's name,
// and leaves out the line every CRIU log has.
func TestErrorTexts(t *testing.T) {
	cases := []struct {
		name string
		e    *Error
		want []string
		not  []string
	}{
		{"benign cr_errmsg with ENOSPC", &Error{Request: "DUMP", Errno: int32(unix.ENOSPC), Message: "rlimit: Can't setup RLIMIT_NOFILE for self"},
			[]string{"errno 28: no space left on device"}, []string{"RLIMIT"}},
		{"full disk", &Error{Request: "DUMP", Space: "the filesystem of /x is full (no space left on device)", Message: "rlimit: Can't setup RLIMIT_NOFILE for self"},
			[]string{"filesystem of /x is full"}, []string{"RLIMIT"}},
		{"benign cr_errmsg, real log line", &Error{Request: "DUMP", Message: "rlimit: Can't setup RLIMIT_NOFILE for self", LogLines: []string{"(0.1) Error (criu/a.c:1): boom"}},
			[]string{"criu says: Error (criu/a.c:1): boom"}, nil},
		{"signal", &Error{Request: "RESTORE", Exited: true, ExitStatus: -1, Signal: 9},
			[]string{"killed by signal 9 (SIGKILL)"}, []string{"status -1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			msg := tc.e.Error()
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("%q lacks %q", msg, w)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(msg, n) {
					t.Errorf("%q says %q", msg, n)
				}
			}
		})
	}
	if !errors.Is(&Error{Request: "DUMP", Errno: int32(unix.ENOSPC)}, unix.ENOSPC) {
		t.Error("errors.Is(ENOSPC) = false")
	}
}

// A handler that waits (the hold between Create and Start) sees its
// context end when criu dies, so the request ends without the hold's
// timeout.
func TestSessionCriuExitDuringHandler(t *testing.T) {
	s, p, proc := newTestSession(t, "")
	go func() {
		p.recv()
		p.send(&rpc.CriuResp{Type: rpc.CriuReqType_NOTIFY.Enum(), Success: ptr(true), Notify: &rpc.CriuNotify{Script: ptr(string(PostSetupNamespaces))}})
		time.Sleep(50 * time.Millisecond)
		proc.end(exitInfo{Status: -1, Signal: 9})
	}()
	start := time.Now()
	_, err := s.Restore(context.Background(), opts(), &Handlers{PostSetupNamespaces: func(ctx context.Context) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Minute):
			return errors.New("held for a minute")
		}
	}})
	if err == nil || !strings.Contains(err.Error(), "killed by signal 9") {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("took %s", d)
	}
}
