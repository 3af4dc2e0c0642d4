// Package container checkpoints and restores containers that runc runs,
// driving CRIU itself through runtime/criu instead of `runc checkpoint` and
// `runc restore`, and hands them back to runc: after a restore, runc's
// state.json is written with runc's own types, so runc state/exec/kill/
// pause/ps/delete work as after `runc restore`.
//
// Checkpoint writes CRIU's images, runc's descriptors.json and ckpt's
// ckpt.json (see runtime/image) into the image dir; ckpt.json comes last,
// so a dir without it is an incomplete checkpoint. Stdio files of the init
// that live outside the container (a log file given to `runc run -d`) are
// dumped as CRIU external files and plugged in again on restore.
//
// Restore is split the way containerd's Create and Start are:
//
//	r, err := container.StartRestore(ctx, opts) // returns at setup-namespaces
//	pid := r.Pid()                                // the restored init, namespaces exist
//	err = r.Finish(ctx)                           // or r.Abort(ctx)
//
// Between the two CRIU restores the mount tree and is held at
// post-setup-namespaces, before any other task, file or socket.
//
// A failed or aborted restore leaves nothing: processes, the criu-root
// mount, the cgroup and runc's state dir are removed.
package container
