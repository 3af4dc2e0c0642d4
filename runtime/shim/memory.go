package shim

import "runtime/debug"

// releaseMemory returns to the kernel the heap that a checkpoint, a
// restore or a container's start grew. CRIU's RPC messages, the image
// metadata, runc's state, the spec and the buffers of Create and Start
// are garbage once the call returns, but the shim then mostly idles for
// as long as its containers run: with little allocation the next GC
// cycle is far off, and the background scavenger returns freed pages
// slowly (never those under the heap goal), so every shim would keep
// that garbage resident (docs/pods.md measures it). In a goroutine, so that the forced GC does not delay the reply to
// containerd.
func releaseMemory() {
	go debug.FreeOSMemory()
}
