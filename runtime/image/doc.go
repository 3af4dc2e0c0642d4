// Package image is what ckpt keeps next to CRIU's images in a checkpoint
// dir: descriptors.json (the init's stdio, runc's format), ckpt.json (the
// metadata that makes a restore reproduce the checkpoint's options) and the
// dump statistics CRIU writes. The dir may come from elsewhere (a tar from
// containerd or Docker), so every file is read defensively: through the dir's
// fd, without following symlinks, regular files only, size-capped.
package image
