package criu

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// forkIn runs fork on the calling thread, which the caller has locked,
// with the thread moved into the network namespace at path for the
// duration: a child inherits its forking thread's namespace. Go cannot
// setns in the child between fork and exec, and a network namespace, as
// opposed to a mount namespace, can be entered by one thread of a
// multi-threaded process. An error from moving the thread back is
// returned after fork's own: the thread must then never run another
// goroutine (errStuckInNetNS).
func forkIn(path string, fork func() error) error {
	if path == "" {
		return fork()
	}
	target, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open the network namespace for criu: %w", err)
	}
	defer target.Close()
	own, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return fmt.Errorf("open this thread's network namespace: %w", err)
	}
	defer own.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("enter the network namespace %s: %w", path, err)
	}
	forkErr := fork()
	if err := unix.Setns(int(own.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("%w %s: %w", errStuckInNetNS, path, err)
	}
	return forkErr
}

// errStuckInNetNS: the forking thread could not leave criu's namespace.
var errStuckInNetNS = errors.New("cannot return from the network namespace")
