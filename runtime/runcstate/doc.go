// Package runcstate reads and writes runc's on-disk state (the state.json
// under runc's root dir) with runc's own libcontainer types, so that a
// container ckpt checkpointed or restored is managed by runc afterwards
// exactly as if runc itself had done it (exec, kill, pause, ps, delete).
//
// ckpt writes state.json only for the runc version go.mod pins (see
// PinnedVersion and CheckVersion): the file format is runc's internal
// business and changes between releases.
package runcstate
