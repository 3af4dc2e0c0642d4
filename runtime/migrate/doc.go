// Package migrate moves a running container from one containerd to another
// as a client of both, through containerd's own API: the task is
// checkpointed by the source's shim into a checkpoint image in the source's
// content store, the image's blobs travel over containerd's content API to
// the target's content store, and the target creates the container (same
// id, namespace, spec, image, runtime) and restores its task from them.
// There is no daemon of ckpt's own on either side.
//
// Order of a stop-and-copy (Config.Copy) move, and why:
//
//  1. Preflight the target (reachable, TLS accepted, containerd 2.x, ckpt's
//     runtime present, no container of that id, the image the same or
//     missing) before the source is touched: bad input fails with the
//     source untouched.
//  2. Checkpoint the source task with exit: CRIU dumps and the task stops.
//     The source's task is deleted (runc state, cgroup, pids freed) so that
//     two containerds on one machine, as in the tests, do not share them;
//     the container record and its snapshot stay until the end.
//  3. Copy the checkpoint's blobs (and the image's where the target lacks
//     it) under a lease on the target.
//  4. Create the container on the target and restore its task.
//  5. Only then delete the source container and its checkpoint image.
//
// Any failure or interrupt between 2 and 4 removes what was made on the
// target (task, container, snapshot, image record, lease, hence content)
// and restores the source task from the checkpoint still held in the
// source's content store, with its original stdio: the source runs again,
// thawed, with the memory it had.
package migrate
