// Package netnsthread runs code on one OS thread moved into a network
// namespace. A network namespace, as opposed to a mount namespace, can be
// entered by one thread of a multi-threaded process, and a child inherits
// its forking thread's: Go cannot setns in a child between fork and exec,
// so a process meant to start in a namespace is forked from such a thread.
package netnsthread

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// ErrStuck: the thread could not go back to its own namespace. It must
// then never run another goroutine: its caller keeps it locked, and it
// ends with the goroutine.
var ErrStuck = errors.New("cannot return from the network namespace")

// In runs fn on the calling thread, which the caller has locked, moved
// into the network namespace at path for fn's duration; "" runs fn where
// the thread is. An error from moving the thread back (ErrStuck) comes
// after fn's own.
func In(path string, fn func() error) error {
	if path == "" {
		return fn()
	}
	target, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open the network namespace: %w", err)
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
	fnErr := fn()
	if err := unix.Setns(int(own.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("%w %s: %w", ErrStuck, path, err)
	}
	return fnErr
}

// Go runs fn on a thread of its own in the network namespace at path, and
// waits for it.
func Go(path string, fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		err := In(path, fn)
		done <- err
		if !errors.Is(err, ErrStuck) {
			runtime.UnlockOSThread()
		}
	}()
	return <-done
}
