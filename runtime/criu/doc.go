// Package criu drives CRIU in RPC mode (`criu swrk`).
//
// A Session owns one criu process and the SOCK_SEQPACKET socket to it. It
// sends requests, dispatches every notification CRIU sends to a typed
// Handler, receives the file descriptors CRIU attaches (the pty master of
// orphan-pts-master) and reports failures with everything that explains them:
// the stage whose handler failed, CRIU's cr_errno and cr_errmsg, and the
// Error lines of the CRIU log.
//
// The package knows nothing about containers: callers build the request
// options. It uses go-criu only for the generated message types; go-criu's
// own client reads with a plain read(2) and so cannot receive descriptors.
package criu
