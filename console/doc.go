// Package console handles the master side of a process's terminal, whether
// runc sent it to a console socket (a fresh terminal process, see Socket)
// or CRIU sent it with its orphan-pts-master notification (a restored one).
//
// A Master is non-blocking, so its reads wait in Go's netpoller and Close
// unblocks them, and its window size goes through SyscallConn rather than
// Fd(). A Console joins a Master, which may arrive after the Console is
// made, to the process's stdio: typed input in, output out, a window size
// applied as soon as there is a master. Output to a FIFO whose reader went
// away is dropped, so that a detached client neither blocks nor kills the
// process, and it reaches a reader that opens the FIFO again (OpenOutput).
//
// The package knows nothing about CRIU or containerd.
package console
