package shim

import (
	"context"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/log"
)

// ctrdCheckpointFile records, in the bundle, containerd's temp copy of a
// restore's checkpoint (ctrdtemp.go), for the cleanup after a crash.
const ctrdCheckpointFile = "ckpt-ctrd-checkpoint"

// cleanupDeadRestore removes what a shim killed during a restore leaves
// in the bundle: CRIU's work dir mounts and containerd's temp copy of the
// checkpoint. The restore's tasks, mounts, cgroups and runc state dir,
// which runc cannot see before CRIU's post-restore, are the engine's to
// remove (Engine.RemoveLeftover, from the record the restore keeps): one
// owner for them, called before this in `shim delete` (manager.Stop).
func cleanupDeadRestore(ctx context.Context, bundle string) {
	dropRecordedCheckpoint(ctx, bundle)
	if err := mount.UnmountRecursive(filepath.Join(bundle, "criu-work"), 0); err != nil {
		log.G(ctx).WithError(err).Warn("unmount what CRIU left in its work dir")
	}
}

// dropRecordedCheckpoint removes containerd's temp copy of the checkpoint
// that a dead shim's restore recorded, if it is still what it was.
func dropRecordedCheckpoint(ctx context.Context, bundle string) {
	dir := readTrimmed(filepath.Join(bundle, ctrdCheckpointFile))
	if dir == "" {
		return
	}
	if !strings.HasPrefix(filepath.Base(dir), ctrdCheckpointPrefix) {
		return
	}
	if fi, err := os.Lstat(dir); err != nil || !fi.IsDir() {
		return
	}
	if err := os.RemoveAll(dir); err != nil {
		log.G(ctx).WithError(err).WithField("dir", dir).Warn("remove containerd's checkpoint temp dir")
	}
}

func readTrimmed(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(data))
}
