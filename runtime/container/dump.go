package container

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"github.com/ckpt-dev/ckpt/runtime/criu"
	"github.com/ckpt-dev/ckpt/runtime/image"
	"github.com/containerd/log"
)

// dump runs the DUMP request; CRIU leaves its statistics in statsDir.
// ckpt.json is written at post-dump, while
// CRIU still holds the frozen tasks: if it cannot be written, the answer is
// false and CRIU resumes the container instead of killing it. After the
// dump it is completed with CRIU's statistics and committed.
func dump(ctx context.Context, s *criu.Session, copts *rpc.CriuOpts, md *image.Metadata, imgDir, statsDir *os.File, pid int,
	onStage func(context.Context, criu.Stage, int) error, start time.Time) error {
	var (
		pending *image.PendingMetadata
		froze   time.Time
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
	if pending == nil {
		// CRIU always sends post-dump with notify_scripts; be safe anyway.
		md.Created = time.Now().UTC()
		return image.WriteMetadata(imgDir.Name(), md)
	}
	return pending.Commit(md)
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
