package main

import (
	"context"

	"github.com/ckpt-dev/ckpt/runtime/container"
	ckptshim "github.com/ckpt-dev/ckpt/runtime/shim"
)

// engine is runtime/container as the task service's Engine. It lives here,
// not in runtime/shim, so that the shim package can be tested without it.
type engine struct{}

func (engine) Checkpoint(ctx context.Context, opts container.CheckpointOptions) error {
	_, err := container.Checkpoint(ctx, opts)
	return err
}

func (engine) StartCheckpoint(ctx context.Context, opts container.CheckpointOptions) (ckptshim.Transfer, error) {
	lc, err := container.StartCheckpoint(ctx, opts)
	if err != nil {
		return nil, err
	}
	return transfer{lc}, nil
}

// transfer drops the final metadata, which the shim does not need.
type transfer struct{ *container.LazyCheckpoint }

func (t transfer) Wait(ctx context.Context) error {
	_, err := t.LazyCheckpoint.Wait(ctx)
	return err
}

func (engine) StartRestore(ctx context.Context, opts container.RestoreOptions) (ckptshim.Restore, error) {
	r, err := container.StartRestore(ctx, opts)
	if err != nil {
		return nil, err // not a typed nil in the interface
	}
	return r, nil
}

func (engine) Pause(ctx context.Context, root, id string) error { return container.Pause(root, id) }

func (engine) Resume(ctx context.Context, root, id string) error { return container.Resume(root, id) }

func (engine) RemoveLeftover(ctx context.Context, root, id string) error {
	return container.RemoveLeftover(ctx, root, id)
}
