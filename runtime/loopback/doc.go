// Package loopback is ckpt's shortcut for a network namespace that holds
// nothing but the loopback runc brought up: Only says whether a
// container's namespace is such (then criu runs inside it and CRIU leaves
// it out of the image), NewNetNS makes a new one with lo up for the
// restore to start criu in, and Up brings lo up in a namespace CRIU
// restored empty. See "A network namespace that is only loopback" in
// docs/DESIGN.md. It knows namespaces and netlink, nothing about CRIU.
package loopback
