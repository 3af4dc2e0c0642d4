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
	"syscall"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"github.com/ckpt-dev/ckpt/runtime/netnsthread"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/log"
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
}

// InheritFD is criu's descriptor number for Config.ExtraFiles[i].
func InheritFD(i int) int32 { return int32(4 + i) }

// process is the running criu, behind an interface so tests can play criu
// without a binary.
type process interface {
	Pid() int
	Kill() error
	// Wait returns criu's exit status; it is called at most once.
	Wait() (int, error)
}

// Session is one criu process and the socket to it. Requests are sent one
// at a time; VERSION, FEATURE_CHECK and PAGE_SERVER keep criu open for the
// next request, PRE_DUMP leaves it waiting for the next (pre-)dump.
type Session struct {
	conn    *conn
	proc    process
	path    string
	logFile string

	mu       sync.Mutex
	exited   bool
	status   int
	waitErr  error
	finished bool // the last response came; criu is exiting by itself
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
	s := &Session{conn: c, proc: &cmdProcess{cmd: cmd, ec: ec, mon: mon}, logFile: cfg.LogFile, path: path}
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
	return &Session{conn: c, proc: p, logFile: logFile}
}

// Pid is criu's pid.
func (s *Session) Pid() int { return s.proc.Pid() }

// Do sends req and answers every notification with h until CRIU's final
// response, which it returns. h may be nil (every stage acknowledged, a pty
// master refused). A handler's error is answered with notify_success=false
// and the session reads on, so the error returned carries CRIU's reason too.
// When ctx ends, criu is killed and Do returns ctx's error.
func (s *Session) Do(ctx context.Context, req *rpc.CriuReq, h Handler) (*rpc.CriuResp, error) {
	if h == nil {
		h = &Handlers{}
	}
	want := req.GetType()
	logger := log.G(ctx).WithField("criu-request", want.String())

	// A cancelled context must unblock the receive and the handlers; the
	// handlers see ctx, the receive sees the deadline.
	stop := context.AfterFunc(ctx, func() { s.conn.uc.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()

	if err := s.conn.send(req); err != nil {
		return nil, s.fail(ctx, &Error{Request: want.String(), Cause: err})
	}
	var failed *Error
	for {
		resp, files, err := s.conn.recv()
		if err != nil {
			e := &Error{Request: want.String(), Cause: err}
			if failed != nil {
				e.Stage, e.Handler = failed.Stage, failed.Handler
			}
			if errors.Is(err, io.EOF) {
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
			ans, herr := h.Notify(ctx, n)
			closeAll(n.files)
			if ctx.Err() != nil {
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
				e := &Error{Request: want.String(), Stage: stage, Handler: herr, Cause: err}
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
			return resp, e
		}
		return resp, nil
	}
}

// fail completes e with what criu's exit and log say, after making sure criu
// is gone.
func (s *Session) fail(ctx context.Context, e *Error) error {
	if ctx.Err() != nil {
		e.Cause = fmt.Errorf("%w (criu killed)", ctx.Err())
	}
	s.kill()
	s.mu.Lock()
	e.ExitStatus, e.Exited = s.status, s.exited
	s.mu.Unlock()
	e.LogFile, e.LogLines = s.logFile, errorLines(s.logFile)
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
	done := make(chan struct{})
	go func() { s.wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		s.proc.Kill()
		<-done
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if finished && s.waitErr == nil && s.status != 0 {
		return fmt.Errorf("criu exited with status %d", s.status)
	}
	return nil
}

func (s *Session) kill() {
	s.conn.Close()
	s.proc.Kill()
	s.wait()
}

func (s *Session) wait() {
	s.mu.Lock()
	if s.exited {
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	status, err := s.proc.Wait()
	s.mu.Lock()
	if !s.exited {
		s.exited, s.status, s.waitErr = true, status, err
	}
	s.mu.Unlock()
}

type cmdProcess struct {
	cmd  *exec.Cmd
	ec   chan runc.Exit
	mon  runc.ProcessMonitor
	once sync.Once
	st   int
	err  error
}

func (p *cmdProcess) Pid() int    { return p.cmd.Process.Pid }
func (p *cmdProcess) Kill() error { return p.cmd.Process.Kill() }
func (p *cmdProcess) Wait() (int, error) {
	p.once.Do(func() { p.st, p.err = p.mon.Wait(p.cmd, p.ec) })
	return p.st, p.err
}

func ptr[T any](v T) *T { return &v }
