package criu

import (
	"context"
	"errors"
	"os"
	"path/filepath"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
)

// The typed requests. Each sets notify_scripts, so the handler sees every
// stage; opts stays the caller's (it is not modified).

func (s *Session) request(ctx context.Context, t rpc.CriuReqType, opts *rpc.CriuOpts, h Handler) (*rpc.CriuResp, error) {
	if opts != nil && h != nil && opts.NotifyScripts == nil {
		o := opts.CloneVT()
		o.NotifyScripts = ptr(true)
		opts = o
	}
	return s.Do(ctx, &rpc.CriuReq{Type: t.Enum(), Opts: opts}, h)
}

// Dump checkpoints the tree rooted at opts.Pid. criu exits afterwards.
func (s *Session) Dump(ctx context.Context, opts *rpc.CriuOpts, h Handler) (*rpc.CriuDumpResp, error) {
	resp, err := s.request(ctx, rpc.CriuReqType_DUMP, opts, h)
	return resp.GetDump(), err
}

// PreDump copies memory while the tree keeps running. criu then waits for
// the next PreDump or the final Dump on this session (iterative migration).
func (s *Session) PreDump(ctx context.Context, opts *rpc.CriuOpts) error {
	_, err := s.request(ctx, rpc.CriuReqType_PRE_DUMP, opts, nil)
	return err
}

// SinglePreDump is one pre-dump pass after which criu exits.
func (s *Session) SinglePreDump(ctx context.Context, opts *rpc.CriuOpts) error {
	_, err := s.request(ctx, rpc.CriuReqType_SINGLE_PRE_DUMP, opts, nil)
	return err
}

// Restore restores the tree in opts' images and returns the root's host
// pid. criu exits afterwards.
func (s *Session) Restore(ctx context.Context, opts *rpc.CriuOpts, h Handler) (int, error) {
	resp, err := s.request(ctx, rpc.CriuReqType_RESTORE, opts, h)
	return int(resp.GetRestore().GetPid()), err
}

// Check asks criu whether the kernel supports checkpoint/restore. CRIU
// wants an images dir even for this; a scratch one holds its log, which a
// failure quotes.
func (s *Session) Check(ctx context.Context) error {
	dir, err := os.MkdirTemp("", "ckpt-criu-check-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	opts := &rpc.CriuOpts{ImagesDirFd: ptr(int32(d.Fd())), LogFile: ptr("check.log"), LogLevel: ptr(int32(2))}
	_, err = s.Do(ctx, &rpc.CriuReq{Type: rpc.CriuReqType_CHECK.Enum(), Opts: opts}, nil)
	var ce *Error
	if errors.As(err, &ce) {
		ce.LogLines = errorLines(filepath.Join(dir, "check.log"))
		ce.LogFile = "criu check log"
	}
	return err
}

// PageServer starts a page server (for pre-dump or dump over the network)
// and returns its pid and port. keepOpen leaves the session usable.
func (s *Session) PageServer(ctx context.Context, opts *rpc.CriuOpts, keepOpen bool) (pid, port int, err error) {
	req := &rpc.CriuReq{Type: rpc.CriuReqType_PAGE_SERVER.Enum(), Opts: opts}
	if keepOpen {
		req.KeepOpen = ptr(true)
	}
	resp, err := s.Do(ctx, req, nil)
	return int(resp.GetPs().GetPid()), int(resp.GetPs().GetPort()), err
}
