package criu

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"github.com/ckpt-dev/ckpt/runtime/netnsthread"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

// Config says how to start criu. The zero value runs "criu" from PATH with
// stdio on /dev/null.
type Config struct {
	// Path of the criu binary; "" looks up "criu" in PATH.
	Path string
	// Stdin, Stdout and Stderr become criu's fds 0-2. On restore they are
	// the new stdio that inherit_fd plugs into the restored tasks.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// ExtraFiles are passed to criu after the RPC socket: ExtraFiles[i] is
	// criu's fd InheritFD(i), for inherit_fd entries.
	ExtraFiles []*os.File
	// Env for criu; nil inherits ours.
	Env []string
	// SysProcAttr is merged into criu's: Pdeathsig is always SIGKILL, so
	// criu never outlives us. Callers may add, for instance, CgroupFD.
	SysProcAttr *syscall.SysProcAttr
	// OnStart runs with criu's pid after it started and before the first
	// request, for instance to move it into the container's cgroup. An
	// error kills criu and fails Start.
	OnStart func(pid int) error
	// LogFile is where criu will write the log the requests ask for (host
	// path); its Error lines are quoted in failures.
	LogFile string
	// Monitor starts and waits criu. A containerd shim, whose reaper reaps
	// every child, must pass its reaper here; nil uses go-runc's default.
	Monitor runc.ProcessMonitor
	// NetNS is a network namespace (a path such as /proc/PID/ns/net) for
	// criu to run in instead of ours. CRIU leaves the namespace it runs in
	// out of a dump: no links, routes or netfilter tables are read.
	NetNS string
	// Limits bound each request (watchdog.go); zero fields take the
	// defaults.
	Limits Limits
}

// InheritFD is criu's descriptor number for Config.ExtraFiles[i].
func InheritFD(i int) int32 { return int32(4 + i) }

// process is the running criu, behind an interface so tests can play criu
// without a binary.
type process interface {
	Pid() int
	Kill() error
	// Wait returns how criu ended; it is called at most once.
	Wait() (exitInfo, error)
}

// exitInfo is how criu ended: an exit status or a signal.
type exitInfo struct {
	Status int
	Signal int // 0 unless killed by a signal
}

// Session is one criu process and the socket to it. Requests are sent one
// at a time; VERSION, FEATURE_CHECK and PAGE_SERVER keep criu open for the
// next request, PRE_DUMP leaves it waiting for the next (pre-)dump.
type Session struct {
	conn    *conn
	proc    process
	path    string
	logFile string

	limits Limits
	// binary and start identify criu's process tree (tree_linux.go);
	// ownReap: no reaper in this process, so ckpt reaps what it kills.
	binary  string
	start   uint64
	ownReap bool
	// exitCh is closed once criu has exited (and was reaped).
	exitCh chan struct{}

	mu       sync.Mutex
	exited   bool
	status   exitInfo
	waitErr  error
	finished bool   // the last response came; criu is exiting by itself
	tree     []task // criu's descendants, as last seen
}

// Start runs `criu swrk 3` with the server end of a fresh socketpair as
// its fd 3.
func Start(ctx context.Context, cfg Config) (*Session, error) {
	path, err := resolve(cfg.Path)
	if err != nil {
		return nil, err
	}
	c, server, err := socketpair()
	if err != nil {
		return nil, err
	}
	defer server.Close()

	cmd := exec.Command(path, "swrk", "3")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = cfg.Stdin, cfg.Stdout, cfg.Stderr
	cmd.ExtraFiles = append([]*os.File{server}, cfg.ExtraFiles...)
	cmd.Env = cfg.Env
	attr := syscall.SysProcAttr{}
	if cfg.SysProcAttr != nil {
		attr = *cfg.SysProcAttr
	}
	attr.Pdeathsig = syscall.SIGKILL
	cmd.SysProcAttr = &attr

	mon := cfg.Monitor
	if mon == nil {
		mon = runc.Monitor
	}
	// Pdeathsig fires when the forking thread dies, not the process: keep
	// the fork on a thread the runtime will not retire meanwhile.
	runtime.LockOSThread()
	var ec chan runc.Exit
	err = netnsthread.In(cfg.NetNS, func() (err error) {
		ec, err = mon.Start(cmd)
		return err
	})
	if errors.Is(err, netnsthread.ErrStuck) {
		// This thread stays in criu's namespace: it stays locked, so that
		// it dies with this goroutine instead of running others, and criu
		// goes.
		if ec != nil {
			cmd.Process.Kill()
			mon.Wait(cmd, ec)
		}
	} else {
		runtime.UnlockOSThread()
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("start %s swrk: %w", path, err)
	}
	s := newSession(c, &cmdProcess{cmd: cmd, ec: ec, mon: mon}, cfg.LogFile)
	s.path, s.binary, s.limits, s.ownReap = path, path, cfg.Limits, cfg.Monitor == nil
	s.start, _ = startTime(cmd.Process.Pid)
	log.G(ctx).WithField("criu-pid", cmd.Process.Pid).Debug("criu swrk started")
	if cfg.OnStart != nil {
		if err := cfg.OnStart(cmd.Process.Pid); err != nil {
			s.kill()
			return nil, fmt.Errorf("prepare criu (pid %d): %w", cmd.Process.Pid, err)
		}
	}
	return s, nil
}

// newSession is Start without a binary: tests hand in the conn and a fake.
func newSession(c *conn, p process, logFile string) *Session {
	s := &Session{conn: c, proc: p, logFile: logFile, exitCh: make(chan struct{})}
	// criu's exit is watched from the start: a criu that dies while its
	// children keep the socket's peer end open never sends EOF.
	go func() { s.wait(); close(s.exitCh) }()
	return s
}

// Pid is criu's pid.
func (s *Session) Pid() int { return s.proc.Pid() }

// Do sends req and answers every notification with h until CRIU's final
// response, which it returns. h may be nil (every stage acknowledged, a pty
// master refused). A handler's error is answered with notify_success=false
// and the session reads on, so the error returned carries CRIU's reason too.
// When ctx ends, criu is killed and Do returns ctx's error; a dump is
// rolled back at criu's next notification instead (Limits.Grace). A criu that
// exits without answering, or that the watchdog stops (watchdog.go), is
// killed with its tree and Do fails saying why.
func (s *Session) Do(ctx context.Context, req *rpc.CriuReq, h Handler) (*rpc.CriuResp, error) {
	if h == nil {
		h = &Handlers{}
	}
	want := req.GetType()
	logger := log.G(ctx).WithField("criu-request", want.String())

	// Whatever ends the wait (ctx, criu's exit, the watchdog) unblocks the
	// receive with a deadline in the past; the handlers see ctx.
	wd := newWatchdog(s.limits, s.logFile, time.Now())
	// Handlers see criu's end too: one that waits (the hold between
	// Create and Start) must not wait for a criu that is gone.
	hctx, hcancel := context.WithCancel(ctx)
	defer hcancel()
	watchStop := make(chan struct{})
	watchDone := make(chan struct{})
	var watchErr error // set before the deadline, read after recv fails
	var watchMu sync.Mutex
	unblock := func() { s.conn.uc.SetReadDeadline(time.Unix(1, 0)) }
	// A dump is rolled back, not cut short: criu killed while its parasite
	// runs inside the container's tasks can take them down with it. Once
	// ctx ends, criu's next notification is answered with failure (CRIU
	// then thaws and resumes the tasks); criu is killed only if it does not
	// reach one within the grace. A lazy dump's status-ready ends that:
	// the parasite is gone, and criu serves pages until it is killed.
	var rollback atomic.Bool
	rollback.Store(isDump(want))
	grace := s.limits.withDefaults().Grace
	go func() {
		defer close(watchDone)
		t := time.NewTicker(watchTick)
		defer t.Stop()
		cancelled := ctx.Done()
		var graceEnd <-chan time.Time
		for {
			select {
			case <-watchStop:
				return
			case <-cancelled:
				if rollback.Load() {
					logger.WithError(ctx.Err()).Warn("interrupted: the dump is rolled back at criu's next notification")
					cancelled, graceEnd = nil, time.After(grace)
					continue
				}
				unblock()
				return
			case <-graceEnd:
				watchMu.Lock()
				watchErr = fmt.Errorf("%w, and criu reached no point to roll back at within %s", ctx.Err(), grace)
				watchMu.Unlock()
				unblock()
				return
			case <-s.exitCh:
				hcancel()
				unblock()
				return
			case now := <-t.C:
				s.snapshotTree()
				if err := wd.check(now); err != nil {
					watchMu.Lock()
					watchErr = err
					watchMu.Unlock()
					hcancel()
					unblock()
					return
				}
			}
		}
	}()
	defer func() { close(watchStop); <-watchDone }()
	stopped := func() error {
		watchMu.Lock()
		defer watchMu.Unlock()
		return watchErr
	}

	if err := s.conn.send(req); err != nil {
		return nil, s.fail(ctx, &Error{Request: want.String(), Cause: peerGone(err)})
	}
	var failed *Error
	for {
		resp, files, err := s.recv()
		if err != nil {
			e := &Error{Request: want.String(), Cause: err}
			if failed != nil {
				e.Stage, e.Handler = failed.Stage, failed.Handler
			}
			switch {
			case stopped() != nil:
				e.Cause = stopped()
			case errors.Is(err, io.EOF), errors.Is(err, errExited):
				e.Cause = nil
			}
			return nil, s.fail(ctx, e)
		}
		if resp.GetType() == rpc.CriuReqType_NOTIFY {
			stage := Stage(resp.GetNotify().GetScript())
			n := &Notification{Stage: stage, Pid: int(resp.GetNotify().GetPid()), files: files}
			nlog := logger.WithField("stage", string(stage))
			if n.Pid != 0 {
				nlog = nlog.WithField("pid", n.Pid)
			}
			nlog.Debug("criu notification")
			if stage == StatusReady {
				rollback.Store(false)
				wd.serve()
			}
			var ans *Answer
			var herr error
			if ctx.Err() != nil && rollback.Load() {
				herr = ctx.Err() // no handler runs for a dump given up
			} else if ctx.Err() == nil {
				wd.handler(true, time.Now())
				ans, herr = h.Notify(hctx, n)
				wd.handler(false, time.Now())
			}
			closeAll(n.files)
			if ctx.Err() != nil && !rollback.Load() {
				// The caller gave up while the handler ran: criu goes now,
				// whatever the read deadline has seen of it yet.
				return nil, s.fail(ctx, &Error{Request: want.String(), Stage: stage, Handler: herr})
			}
			reply := &rpc.CriuReq{Type: rpc.CriuReqType_NOTIFY.Enum(), NotifySuccess: ptr(herr == nil)}
			if herr == nil && ans != nil && len(ans.External) > 0 {
				// images_dir_fd is required by the protocol; CRIU reads only
				// the externals from this answer.
				reply.Opts = &rpc.CriuOpts{ImagesDirFd: ptr(int32(-1)), External: ans.External}
			}
			if herr != nil {
				nlog.WithError(herr).Warn("answering criu notification with failure")
				if failed == nil {
					failed = &Error{Request: want.String(), Stage: stage, Handler: herr}
				}
			}
			if err := s.conn.send(reply); err != nil {
				e := &Error{Request: want.String(), Stage: stage, Handler: herr, Cause: peerGone(err)}
				return nil, s.fail(ctx, e)
			}
			continue
		}
		closeAll(files)
		if len(files) > 0 {
			logger.Warnf("closed %d descriptors criu attached to its %s response", len(files), resp.GetType())
		}
		if !req.GetKeepOpen() && want != rpc.CriuReqType_PRE_DUMP {
			s.mu.Lock()
			s.finished = true
			s.mu.Unlock()
		}
		if resp.GetType() != want {
			e := &Error{Request: want.String(), Errno: resp.GetCrErrno(), Message: resp.GetCrErrmsg(),
				Cause: fmt.Errorf("criu answered %s to a %s request", resp.GetType(), want)}
			return resp, s.fail(ctx, e)
		}
		if !resp.GetSuccess() || failed != nil {
			e := &Error{Request: want.String(), Errno: resp.GetCrErrno(), Message: resp.GetCrErrmsg(), Succeeded: resp.GetSuccess()}
			if failed != nil {
				e.Stage, e.Handler = failed.Stage, failed.Handler
			}
			e.LogFile, e.LogLines = s.logFile, errorLines(s.logFile)
			e.Space = lowSpace(s.logFile)
			return resp, e
		}
		return resp, nil
	}
}

// isDump: the requests that put CRIU's parasite into the tasks.
func isDump(t rpc.CriuReqType) bool {
	return t == rpc.CriuReqType_DUMP || t == rpc.CriuReqType_PRE_DUMP || t == rpc.CriuReqType_SINGLE_PRE_DUMP
}

// peerGone is nil for a send that failed because criu's end is closed:
// criu is gone, and its exit says why.
func peerGone(err error) error {
	if errors.Is(err, unix.EPIPE) || errors.Is(err, unix.ECONNRESET) {
		return nil
	}
	return err
}

// errExited: criu exited, and nothing it sent is left to read.
var errExited = errors.New("criu exited")

// recv receives the next message. Once criu has exited, the read deadline
// is in the past; what criu sent before it exited is still in the socket
// and is read without waiting.
func (s *Session) recv() (*rpc.CriuResp, []*os.File, error) {
	resp, files, err := s.conn.recv()
	if err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
		return resp, files, err
	}
	select {
	case <-s.exitCh:
	default:
		return nil, nil, err
	}
	resp, files, nerr := s.conn.recvNow()
	if errors.Is(nerr, unix.EAGAIN) {
		return nil, nil, errExited
	}
	return resp, files, nerr
}

// fail completes e with what criu's exit and log say, after making sure criu
// and its tree are gone.
func (s *Session) fail(ctx context.Context, e *Error) error {
	if err := ctx.Err(); err != nil {
		if !errors.Is(e.Cause, err) {
			e.Cause = err
		}
		e.Cause = fmt.Errorf("%w (criu killed)", e.Cause)
	}
	// No other cause: criu ended by itself (EOF, a closed socket, or its
	// exit seen), and how it ended is the news: it gets a moment to be
	// reaped, so that our kill does not hide its own status.
	e.Exited = e.Cause == nil
	if e.Exited {
		select {
		case <-s.exitCh:
		case <-time.After(time.Second):
		}
	}
	s.kill()
	s.mu.Lock()
	e.ExitStatus, e.Signal = s.status.Status, s.status.Signal
	s.mu.Unlock()
	e.LogFile, e.LogLines = s.logFile, errorLines(s.logFile)
	e.Space = lowSpace(s.logFile)
	return e
}

// Close ends the session: criu is given a moment to exit after its last
// response, then killed. It returns criu's exit error only when criu was
// expected to exit cleanly and did not.
func (s *Session) Close() error {
	s.conn.Close() // criu sees EOF: a waiting swrk exits
	s.mu.Lock()
	finished := s.finished
	s.mu.Unlock()
	select {
	case <-s.exitCh:
	case <-time.After(5 * time.Second):
		s.kill()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if finished && s.waitErr == nil && (s.status.Status != 0 || s.status.Signal != 0) {
		return fmt.Errorf("criu %s", s.status)
	}
	return nil
}

// kill ends criu and every process of its tree (tree_linux.go), and waits
// for criu.
func (s *Session) kill() {
	s.conn.Close()
	s.mu.Lock()
	tree := append(descendants(s.proc.Pid()), s.tree...)
	s.mu.Unlock()
	select {
	case <-s.exitCh:
	default:
		s.proc.Kill()
	}
	tree = append(tree, siblingsRunning(s.binary, s.start)...)
	hit := killTasks(tree)
	<-s.exitCh
	if len(hit) > 0 {
		log.L.WithField("criu-pid", s.proc.Pid()).WithField("killed", len(hit)).Debug("killed criu's tree")
		if s.ownReap {
			reapOwn(hit)
		}
	}
}

// snapshotTree records criu's descendants while criu lives: once it died
// they are reparented and can no longer be found from it.
func (s *Session) snapshotTree() {
	select {
	case <-s.exitCh:
		return
	default:
	}
	if s.binary == "" {
		return // a test's fake criu
	}
	tree := descendants(s.proc.Pid())
	s.mu.Lock()
	s.tree = tree
	s.mu.Unlock()
}

func (s *Session) wait() {
	st, err := s.proc.Wait()
	s.mu.Lock()
	s.exited, s.status, s.waitErr = true, st, err
	s.mu.Unlock()
}

func (e exitInfo) String() string {
	if e.Signal != 0 {
		return fmt.Sprintf("was killed by signal %d (%s)", e.Signal, unix.SignalName(syscall.Signal(e.Signal)))
	}
	return fmt.Sprintf("exited with status %d", e.Status)
}

type cmdProcess struct {
	cmd  *exec.Cmd
	ec   chan runc.Exit
	mon  runc.ProcessMonitor
	once sync.Once
	st   exitInfo
	err  error
}

func (p *cmdProcess) Pid() int    { return p.cmd.Process.Pid }
func (p *cmdProcess) Kill() error { return p.cmd.Process.Kill() }
func (p *cmdProcess) Wait() (exitInfo, error) {
	p.once.Do(func() {
		status, err := p.mon.Wait(p.cmd, p.ec)
		p.st, p.err = exitInfo{Status: status}, err
		if ps := p.cmd.ProcessState; ps != nil {
			// go-runc's own monitor waits through exec.Cmd: the status
			// says whether a signal ended criu (ExitStatus alone is -1).
			if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				p.st = exitInfo{Status: -1, Signal: int(ws.Signal())}
			}
		} else if status > 128 && status <= 128+64 {
			// containerd's reaper reports a signal as 128+signal; criu
			// itself exits with 0 or 1.
			p.st.Signal = status - 128
		}
	})
	return p.st, p.err
}

func ptr[T any](v T) *T { return &v }
