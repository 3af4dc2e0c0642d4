package loopback

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"sync"

	"github.com/ckpt-dev/ckpt/runtime/netnsthread"
	"golang.org/x/sys/unix"
)

// An image made with criu inside a loopback-only network namespace
// (image.Options.CRIUInNetNS) holds no namespace: criu restores into a
// new one with lo up, made by ckpt. Bringing lo up takes the kernel's
// rtnl lock, which a dying network namespace holds across an RCU grace
// period while it unregisters its devices; right after a checkpoint that
// stopped the container, that is the container's old namespace, and lo
// waited 5-9 ms behind it with the restore. So the namespace is made as
// soon as the restore has read ckpt.json, lo comes up on a goroutine while
// the restore is prepared and criu starts, and the restore waits for it
// only where CRIU could first need it: at setup-namespaces, before any
// hook runs and before any socket is restored.

// NetNS is a new network namespace whose lo is being brought up.
// Making the namespace registers its lo, which takes the rtnl lock too,
// so it is made on a goroutine as well: the restore waits for it only
// when criu is about to start in it.
type NetNS struct {
	made    chan struct{} // closed once file or madeErr is set
	file    *os.File      // the namespace, for criu to join
	madeErr error
	up      chan error // lo's outcome, once
	once    sync.Once
	err     error
}

// NewNetNS starts making the namespace and bringing its lo up. A
// thread enters a new network namespace with unshare, which leaves the
// rest of the process where it is, and goes back with setns.
func NewNetNS() *NetNS {
	n := &NetNS{made: make(chan struct{}), up: make(chan error, 1)}
	go func() {
		runtime.LockOSThread()
		own, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			n.madeErr = err
			close(n.made)
			return
		}
		defer own.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			n.madeErr = fmt.Errorf("unshare: %w", err)
			close(n.made)
			return
		}
		n.file, n.madeErr = os.Open("/proc/thread-self/ns/net")
		close(n.made)
		var upErr error
		if n.madeErr == nil {
			upErr = setLoopbackUp()
		}
		back := unix.Setns(int(own.Fd()), unix.CLONE_NEWNET)
		// lo's outcome is sent only once the thread is back: past wait,
		// no thread of the shim is left in the container's namespace.
		if n.madeErr == nil {
			n.up <- upErr
		}
		if back != nil {
			// The thread cannot go back: locked, it ends with this
			// goroutine instead of running others in the new namespace.
			return
		}
		runtime.UnlockOSThread()
	}()
	return n
}

// Path waits for the namespace and names it for criu.Config.NetNS, valid
// until Close.
func (n *NetNS) Path(ctx context.Context) (string, error) {
	select {
	case <-n.made:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	if n.madeErr != nil {
		return "", fmt.Errorf("make a network namespace to restore into: %w", n.madeErr)
	}
	return fmt.Sprintf("/proc/self/fd/%d", n.file.Fd()), nil
}

// Close lets the namespace go once nothing else is in it; it waits for
// the namespace to be made, so that none is left behind.
func (n *NetNS) Close() error {
	<-n.made
	if n.file == nil {
		return nil
	}
	return n.file.Close()
}

// Wait returns once lo is up and the thread that made the namespace has
// left it, or why lo could not come up.
func (n *NetNS) Wait(ctx context.Context) error {
	n.once.Do(func() {
		select {
		case <-n.made:
			if n.madeErr != nil {
				n.err = n.madeErr
				return
			}
		case <-ctx.Done():
			n.err = ctx.Err()
			return
		}
		select {
		case n.err = <-n.up:
		case <-ctx.Done():
			n.err = ctx.Err()
		}
		if n.err != nil {
			n.err = fmt.Errorf("bring lo up in the restored network namespace: %w", n.err)
		}
	})
	return n.err
}

// Up brings lo up in pid's network namespace: a restore of a
// namespace dumped empty by Only.
func Up(pid int) error {
	err := netnsthread.Go(fmt.Sprintf("/proc/%d/ns/net", pid), setLoopbackUp)
	if err != nil {
		return fmt.Errorf("bring lo up in the restored network namespace: %w", err)
	}
	return nil
}

// setLoopbackUp brings lo up in the calling thread's network namespace,
// as `ip link set lo up` does; the kernel then gives it 127.0.0.1/8 and
// ::1/128, as runc's lo has.
func setLoopbackUp() error {
	return withLoopback(func(fd int, ifr *unix.Ifreq) error {
		ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
		if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
			return fmt.Errorf("set lo up: %w", err)
		}
		return nil
	})
}

// withLoopback calls fn with a socket and lo's request, its flags read,
// in the calling thread's network namespace.
func withLoopback(fn func(fd int, ifr *unix.Ifreq) error) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("read lo's flags: %w", err)
	}
	return fn(fd, ifr)
}
