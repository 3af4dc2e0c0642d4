package criu

import (
	"os"
	"sync"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"golang.org/x/sys/unix"
)

// peer plays CRIU's side of the socketpair.
type peer struct {
	t    *testing.T
	fd   int
	once sync.Once
	proc *fakeProc
}

// fakeProc stands in for the criu process.
type fakeProc struct {
	mu     sync.Mutex
	killed bool
	status exitInfo
	exited chan struct{}
	once   sync.Once
}

func newFakeProc() *fakeProc { return &fakeProc{exited: make(chan struct{})} }

func (p *fakeProc) Pid() int { return 4242 }
func (p *fakeProc) Kill() error {
	p.mu.Lock()
	p.killed = true
	p.mu.Unlock()
	p.end(exitInfo{Status: -1, Signal: 9})
	return nil
}
func (p *fakeProc) exit(status int) { p.end(exitInfo{Status: status}) }
func (p *fakeProc) end(st exitInfo) {
	p.once.Do(func() {
		p.mu.Lock()
		p.status = st
		p.mu.Unlock()
		close(p.exited)
	})
}
func (p *fakeProc) Wait() (exitInfo, error) {
	<-p.exited
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status, nil
}
func (p *fakeProc) wasKilled() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.killed
}

// newTestSession returns a session whose criu is a fake and the peer end.
func newTestSession(t *testing.T, logFile string) (*Session, *peer, *fakeProc) {
	t.Helper()
	c, server, err := socketpair()
	if err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Dup(int(server.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	server.Close()
	proc := newFakeProc()
	p := &peer{t: t, fd: fd, proc: proc}
	s := newSession(c, proc, logFile)
	t.Cleanup(func() {
		proc.exit(0)
		s.Close()
		p.close()
	})
	return s, p, proc
}

func (p *peer) close() {
	p.once.Do(func() { unix.Close(p.fd) })
}

func (p *peer) sendRaw(b []byte, files ...*os.File) error {
	var oob []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for i, f := range files {
			fds[i] = int(f.Fd())
		}
		oob = unix.UnixRights(fds...)
	}
	return unix.Sendmsg(p.fd, b, oob, nil, 0)
}

func (p *peer) send(resp *rpc.CriuResp, files ...*os.File) {
	b, err := resp.MarshalVT()
	if err != nil {
		p.t.Error(err)
		return
	}
	if err := p.sendRaw(b, files...); err != nil {
		p.t.Errorf("peer send: %v", err)
	}
}

// recv reads one request; nil at EOF.
func (p *peer) recv() *rpc.CriuReq {
	buf := make([]byte, 1<<16)
	n, _, _, _, err := unix.Recvmsg(p.fd, buf, nil, 0)
	if err != nil {
		p.t.Errorf("peer recv: %v", err)
		return nil
	}
	if n == 0 {
		return nil
	}
	req := &rpc.CriuReq{}
	if err := req.UnmarshalVT(buf[:n]); err != nil {
		p.t.Errorf("peer decode: %v", err)
		return nil
	}
	return req
}

// notify sends a notification and returns the client's answer.
func (p *peer) notify(stage Stage, pid int32, files ...*os.File) *rpc.CriuReq {
	n := &rpc.CriuNotify{Script: ptr(string(stage))}
	if pid != 0 {
		n.Pid = ptr(pid)
	}
	p.send(&rpc.CriuResp{Type: rpc.CriuReqType_NOTIFY.Enum(), Success: ptr(true), Notify: n}, files...)
	return p.recv()
}

func (p *peer) final(t rpc.CriuReqType, ok bool, errno int32, msg string) {
	r := &rpc.CriuResp{Type: t.Enum(), Success: ptr(ok)}
	if errno != 0 {
		r.CrErrno = ptr(errno)
	}
	if msg != "" {
		r.CrErrmsg = ptr(msg)
	}
	p.send(r)
	// criu swrk exits once it has answered the request.
	status := 0
	if !ok {
		status = 1
	}
	p.proc.exit(status)
}

// openFDs names this process's descriptors: number -> what it points at.
func openFDs(t *testing.T) map[string]string {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	fds := make(map[string]string, len(ents))
	for _, e := range ents {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil {
			continue // the directory's own descriptor, closed since
		}
		fds[e.Name()] = target
	}
	return fds
}

// noNewFDs fails t if a descriptor is open that was not in before.
func noNewFDs(t *testing.T, before map[string]string) {
	t.Helper()
	for fd, target := range openFDs(t) {
		if before[fd] != target {
			t.Errorf("fd %s (%s) is left open", fd, target)
		}
	}
}

// opts are the least options CRIU's protocol requires.
func opts() *rpc.CriuOpts { return &rpc.CriuOpts{ImagesDirFd: ptr(int32(-1))} }
