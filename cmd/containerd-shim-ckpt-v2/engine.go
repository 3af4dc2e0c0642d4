package main

import (
	"context"

	"github.com/ckpt-dev/ckpt/runtime/container"
	"github.com/ckpt-dev/ckpt/runtime/image"
	ckptshim "github.com/ckpt-dev/ckpt/runtime/shim"
)

// engine adapts runtime/container to the task service's Engine.
type engine struct{}

func (engine) Checkpoint(ctx context.Context, req ckptshim.CheckpointRequest) error {
	opts := container.CheckpointOptions{
		Root: req.Root, ID: req.ID, Runc: req.Runc, Monitor: req.Monitor,
		ImagePath: req.ImagePath, WorkPath: req.WorkPath, ParentPath: req.ParentPath,
		LeaveRunning: req.LeaveRunning, TCPEstablished: req.TCPEstablished, ExtUnixSK: req.ExtUnixSK,
		ShellJob: req.ShellJob, FileLocks: req.FileLocks, EmptyNetNS: req.EmptyNetNS,
		CgroupsMode: req.CgroupsMode,
	}
	if ws := req.WindowSize; ws != nil {
		opts.WindowSize = &image.WindowSize{Rows: ws.Rows, Cols: ws.Cols}
	}
	_, err := container.Checkpoint(ctx, opts)
	return err
}

func (engine) StartRestore(ctx context.Context, req ckptshim.RestoreRequest) (ckptshim.Restore, error) {
	opts := container.RestoreOptions{
		Root: req.Root, ID: req.ID, Runc: req.Runc, Monitor: req.Monitor,
		Bundle: req.Bundle, ImagePath: req.ImagePath, WorkPath: req.WorkPath,
		Stdio: req.Stdio, Console: req.Console, RootfsLate: req.RootfsLate,
	}
	if l := req.Lazy; l != nil {
		opts.LazyPages, opts.PageServer = true, l.PageServer
		opts.TLS = container.TLS{Enabled: l.TLS || l.TLSCACert != "" || l.TLSCert != "" || l.TLSKey != "",
			CACert: l.TLSCACert, Cert: l.TLSCert, Key: l.TLSKey}
	}
	r, err := container.StartRestore(ctx, opts)
	if err != nil {
		return nil, err
	}
	return r, nil
}

func (engine) Pause(ctx context.Context, root, id string) error { return container.Pause(root, id) }

func (engine) Resume(ctx context.Context, root, id string) error { return container.Resume(root, id) }
