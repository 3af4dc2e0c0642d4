package container

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"github.com/ckpt-dev/ckpt/runtime/criu"
	"github.com/ckpt-dev/ckpt/runtime/image"
	"github.com/ckpt-dev/ckpt/runtime/tmpfs"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/log"
	"github.com/opencontainers/runc/libcontainer"
)

// dump runs the DUMP request; CRIU leaves its statistics in statsDir.
// ckpt.json is written at post-dump, while
// CRIU still holds the frozen tasks: if it cannot be written, the answer is
// false and CRIU resumes the container instead of killing it. After the
// dump it is completed with CRIU's statistics and committed.
//
// A lazy dump (ready != nil) is complete at status-ready but for its
// memory, which CRIU then serves until a lazy restore has fetched it:
// ckpt.json is committed there, before ready is told, so that the restore
// can start; after CRIU's final response it is rewritten with the
// statistics.
func dump(ctx context.Context, s *criu.Session, copts *rpc.CriuOpts, md *image.Metadata, imgDir, statsDir *os.File, pid int,
	onStage func(context.Context, criu.Stage, int) error, start time.Time, ready func(image.Metadata)) error {
	var (
		pending   *image.PendingMetadata
		froze     time.Time
		committed bool
	)
	h := &criu.Handlers{
		Any: func(ctx context.Context, n *criu.Notification) error {
			if onStage != nil {
				return onStage(ctx, n.Stage, pid)
			}
			return nil
		},
		PreDump: func(context.Context) error {
			froze = time.Now()
			return nil
		},
		PostDump: func(context.Context) error {
			if !froze.IsZero() {
				md.Timings.FreezeToPostDumpMs = time.Since(froze).Milliseconds()
			}
			md.Created = time.Now().UTC()
			p, err := image.WritePending(imgDir.Name(), md)
			if err != nil {
				return fmt.Errorf("write checkpoint metadata: %w", err)
			}
			pending = p
			return nil
		},
		StatusReady: func(context.Context) error {
			if ready == nil {
				return nil
			}
			md.Timings.TotalMs = time.Since(start).Milliseconds()
			if pending != nil {
				if err := pending.Commit(md); err != nil {
					return fmt.Errorf("write checkpoint metadata: %w", err)
				}
				pending, committed = nil, true
			}
			ready(*md)
			return nil
		},
	}
	dumpStart := time.Now()
	if _, err := s.Dump(ctx, copts, h); err != nil {
		pending.Discard()
		return err
	}
	md.Timings.DumpMs = time.Since(dumpStart).Milliseconds()
	if st, err := image.ReadDumpStats(statsDir); err == nil {
		md.Stats = st
	} else {
		log.G(ctx).WithError(err).Debug("no CRIU dump statistics")
	}
	md.Timings.TotalMs = time.Since(start).Milliseconds()
	if committed {
		return image.WriteMetadata(imgDir.Name(), md)
	}
	if pending == nil {
		// CRIU always sends post-dump with notify_scripts; be safe anyway.
		md.Created = time.Now().UTC()
		return image.WriteMetadata(imgDir.Name(), md)
	}
	return pending.Commit(md)
}

// frozenDump is a dump with ckpt's freeze: at pre-dump, after the hooks and
// action scripts, as CRIU would freeze. The empty tmpfs mounts the request
// leaves out are looked at again once the container is frozen.
type frozenDump struct {
	st               *libcontainer.State
	md               *image.Metadata
	imgDir, statsDir *os.File
	onStage          func(context.Context, criu.Stage, int) error
	start            time.Time
	// ready is told at a lazy dump's status-ready (nil: not lazy).
	ready func(image.Metadata)
}

func (d *frozenDump) run(ctx context.Context, s *criu.Session, copts *rpc.CriuOpts) error {
	thaw := func() {}
	defer func() { thaw() }()
	pid := d.st.InitProcessPid
	stage := func(ctx context.Context, stage criu.Stage, pid int) error {
		if d.onStage != nil {
			if err := d.onStage(ctx, stage, pid); err != nil {
				return err
			}
		}
		if stage != criu.PreDump {
			return nil
		}
		var err error
		if thaw, err = freezeFirst(ctx, d.st); err != nil {
			return err
		}
		return tmpfs.CheckUnchanged(pid, d.md.FreshTmpfs)
	}
	return dump(ctx, s, copts, d.md, d.imgDir, d.statsDir, pid, stage, d.start, d.ready)
}

// preDump copies the memory once. SINGLE_PRE_DUMP (CRIU >= 3.17) ends
// cleanly; the older PRE_DUMP leaves criu waiting for the next request, and
// closing the session ends it.
func preDump(ctx context.Context, s *criu.Session, caps *criu.Capabilities, copts *rpc.CriuOpts) error {
	if caps.SinglePreDump() {
		return s.SinglePreDump(ctx, copts)
	}
	return s.PreDump(ctx, copts)
}

// deleteAfterDump removes runc's state of a container whose processes CRIU
// killed, as `runc delete` would (cgroup, state dir, poststop hooks), with
// runc's own library, the version whose state ckpt writes: an exec of runc
// costs more than the deletion itself. A state the library cannot load or
// delete is left to runc: a plain delete, then --force (which waits 100 ms
// for processes to die, even in a stopped container).
func deleteAfterDump(ctx context.Context, opts CheckpointOptions) error {
	c, err := libcontainer.Load(opts.Root, opts.ID)
	if err == nil {
		var st libcontainer.Status
		if st, err = c.Status(); err == nil && st == libcontainer.Stopped {
			if err = c.Destroy(); err == nil {
				return nil
			}
		} else if err == nil {
			err = fmt.Errorf("container is %s", st)
		}
	}
	log.G(ctx).WithError(err).Debug("runc's library did not delete the container; running runc delete")
	r := &runc.Runc{Command: opts.Runc, Root: opts.Root}
	if err := r.Delete(ctx, opts.ID, nil); err != nil {
		return r.Delete(ctx, opts.ID, &runc.DeleteOpts{Force: true})
	}
	return nil
}
