package shim

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/log"
)

// ctrdCheckpointPrefix is the name containerd's task service (2.x,
// plugins/services/tasks) gives the dir it unpacks a checkpoint image
// into for a restore: os.MkdirTemp($XDG_RUNTIME_DIR, "ctrd-checkpoint").
// containerd never removes it; only the shim reads it, and only while
// CRIU restores (docs/DESIGN.md, "containerd's checkpoint temp dirs").
const ctrdCheckpointPrefix = "ctrd-checkpoint"

// ctrdCheckpointDir returns checkpoint if it is the dir containerd made
// for this restore, "" if it may be anyone else's: a dir the client named
// (CriuImagePath: Options.CriuImagePath, ctr's --image-path, the CRI
// plugin's RestoreFromPath, all outside containerd's temp dir or without
// MkdirTemp's random digits), a symlink, or a dir another user owns.
// getenv is os.Getenv: the shim inherits containerd's environment, so
// it finds the temp dir containerd used.
func ctrdCheckpointDir(checkpoint string, opts *options.Options, getenv func(string) string) string {
	if checkpoint == "" || opts.CriuImagePath != "" {
		return ""
	}
	parent := getenv("XDG_RUNTIME_DIR")
	if parent == "" {
		// os.TempDir, as containerd's MkdirTemp("") sees it.
		if parent = getenv("TMPDIR"); parent == "" {
			parent = "/tmp"
		}
	}
	if filepath.Dir(filepath.Clean(checkpoint)) != filepath.Clean(parent) {
		return ""
	}
	digits, ok := strings.CutPrefix(filepath.Base(checkpoint), ctrdCheckpointPrefix)
	if !ok || digits == "" || strings.Trim(digits, "0123456789") != "" {
		return ""
	}
	fi, err := os.Lstat(checkpoint)
	if err != nil || !fi.IsDir() {
		return ""
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || int(st.Uid) != os.Geteuid() {
		return ""
	}
	return checkpoint
}

// dropCheckpoint removes containerd's temp copy of the checkpoint once
// CRIU is done with it (the restore finished, failed or was aborted).
func (c *container) dropCheckpoint(ctx context.Context) {
	c.emu.Lock()
	dir := c.ctrdCheckpoint
	c.ctrdCheckpoint = ""
	c.emu.Unlock()
	if dir == "" {
		return
	}
	if err := os.RemoveAll(dir); err != nil {
		log.G(ctx).WithError(err).WithField("dir", dir).Warn("remove containerd's checkpoint temp dir")
		return
	}
	log.G(ctx).WithField("dir", dir).Debug("removed containerd's checkpoint temp dir")
}
