// Package policy is the one place that decides a checkpoint's CRIU
// options from what a container says and what its client asks: the
// client's own options (containerd's runc CheckpointOptions, `ckpt
// checkpoint`'s flags) when it sends any, else the container's defaults,
// from its runtime's config (containerd's runtime options: ConfigPath or
// ConfigBody, daemon.json's "options") and its io.ckpt.checkpoint.*
// annotations. The shim and the CLI both use it, so a container
// checkpoints the same way through either.
//
// It yields runtime/container's CheckpointOptions; the caller adds what
// only it knows (runc root, id, image and work paths, terminal, monitor).
package policy
