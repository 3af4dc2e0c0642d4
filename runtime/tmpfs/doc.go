// Package tmpfs is ckpt's replacement for CRIU's archive of a tmpfs that
// holds no data: at checkpoint it finds the container's tmpfs superblocks
// that a restore can make again exactly (Recreatable), records their
// inodes, and looks again once the container is frozen (CheckUnchanged);
// at restore it mounts a new tmpfs with the same flags, options and
// inodes (Mount). runtime/container decides when; this package knows
// mounts and inodes, nothing about CRIU or runc's state.
package tmpfs
