package shim

import "runtime/debug"

// releaseMemory returns to the kernel the heap that a checkpoint or a
// restore grew. CRIU's RPC messages, the image metadata and runc's state
// are garbage once the engine returns, but the shim then mostly idles for
// as long as its container runs: with little allocation the next GC cycle
// is far off, and the background scavenger returns freed pages slowly, so
// every restored container's shim would keep that garbage resident. In a
// goroutine, so that the forced GC does not delay the reply to containerd.
func releaseMemory() {
	go debug.FreeOSMemory()
}
