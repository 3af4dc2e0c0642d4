package hooks

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Running a hook inside a container, without a helper binary.
//
// Go's exec forks from the calling OS thread, and a child inherits that
// thread's namespaces (the pid namespace applies to children only). So one
// goroutine, locked to its own thread for the life of the process (the
// launcher), enters a container's namespaces, starts the hook, and goes
// back to ckpt's namespaces.
//
// The launcher never ends, and is never the main thread:
//   - The kernel sends a child's parent-death signal when the thread that
//     forked it ends, not the process. criu runs with Pdeathsig=SIGKILL
//     (runtime/criu), and Go reuses threads, so ending a thread that has
//     been changed (the usual "lock and never unlock" way) would kill any
//     criu that thread once started.
//   - /proc/self is the main thread's view (mountinfo, cgroup, ns/*): it
//     must stay ckpt's.
//
// What the kernel allows a multithreaded process decides what is entered:
//   - mnt, uts, ipc, net, pid and cgroup are joined with setns (mnt needs
//     the thread's fs struct unshared first) and left again the same way.
//   - A time namespace cannot be joined (EUSERS). When the container's
//     differs, the launcher makes a new one for its children with the
//     container's clock offsets, so the hook reads the container's clocks
//     (the namespace's inode differs). Later hooks in the host's time get a
//     fresh one with zero offsets: the host's clocks.
//   - A user namespace cannot be joined either; it is not entered, and the
//     hook runs with ckpt's (host root's) credentials, which are privileged
//     over any user namespace. runc containers here have none of their own.
//
// A createContainer hook's path resolves on the host. Where the same path
// in the container names the same file (a bind mount of the hooks' dir),
// the hook simply runs by its path. Otherwise it is opened before entering
// and executed as /proc/self/fd/3 (opened for reading, so that the
// descriptor stays usable across exec and a "#!" script's interpreter,
// which resolves in the container, can read it; the script's $0 is then
// /proc/self/fd/3). That path resolves in the container's /proc, so such a
// hook needs the container to have /proc mounted.

// joinable are the namespaces the launcher joins, in this order. The
// descriptors are all opened before anything is entered.
var joinable = []struct {
	name string
	flag int
}{
	{"cgroup", unix.CLONE_NEWCGROUP},
	{"ipc", unix.CLONE_NEWIPC},
	{"uts", unix.CLONE_NEWUTS},
	{"net", unix.CLONE_NEWNET},
	{"pid", unix.CLONE_NEWPID},
	{"mnt", unix.CLONE_NEWNS},
}

// zeroOffsets are the clock offsets of the host's time.
const zeroOffsets = "monotonic 0 0\nboottime 0 0\n"

// startInContainer starts cmd, through start, in the namespaces of process
// pid. With pathInContainer false, cmd.Path resolves on the host (see
// above).
func startInContainer(cmd *exec.Cmd, start func() error, pid int, pathInContainer bool) error {
	if pid <= 0 {
		return errors.New("no container process to enter")
	}
	if !pathInContainer {
		f, err := os.Open(cmd.Path)
		if err != nil {
			return err
		}
		defer f.Close()
		if !sameFileInside(f, pid, cmd.Path) {
			cmd.ExtraFiles = append([]*os.File{f}, cmd.ExtraFiles...)
			cmd.Path = "/proc/self/fd/3"
		}
	}
	reqs, err := theLauncher()
	if err != nil {
		return err
	}
	req := launch{start: start, pid: pid, done: make(chan error, 1)}
	reqs <- req
	return <-req.done
}

// sameFileInside reports whether path names, in the container of pid, the
// very file f is on the host (a bind mount shares it). The hook then runs
// by its path, as under runc, and a script's $0 is that path.
func sameFileInside(f *os.File, pid int, path string) bool {
	host, err := f.Stat()
	if err != nil {
		return false
	}
	inside, err := os.Lstat(fmt.Sprintf("/proc/%d/root%s", pid, path))
	if err != nil || !inside.Mode().IsRegular() {
		return false
	}
	return os.SameFile(host, inside)
}

type launch struct {
	start func() error
	pid   int
	done  chan error
}

var (
	launcherMu sync.Mutex
	launches   chan launch
)

// theLauncher returns the launcher's queue, starting it the first time
// (and again if it broke).
func theLauncher() (chan<- launch, error) {
	launcherMu.Lock()
	defer launcherMu.Unlock()
	if launches != nil {
		return launches, nil
	}
	reqs := make(chan launch)
	ready := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() != unix.Getpid() {
			serve(reqs, ready)
			return
		}
		// Holding the main thread locked here makes the launcher lock
		// another one.
		inner := make(chan error, 1)
		go func() {
			runtime.LockOSThread()
			serve(reqs, inner)
		}()
		ready <- <-inner
		runtime.UnlockOSThread()
	}()
	if err := <-ready; err != nil {
		return nil, fmt.Errorf("start the hook launcher thread: %w", err)
	}
	launches = reqs
	return reqs, nil
}

// serve is the launcher's loop; it never returns (see above). A launcher
// that cannot get back home is retired: the next hook starts a new one,
// and a request already on its way gets an error.
func serve(reqs <-chan launch, ready chan<- error) {
	h, err := newHome()
	ready <- err
	if err != nil {
		select {}
	}
	for req := range reqs {
		if h.lost != nil {
			req.done <- fmt.Errorf("hook launcher retired: %w", h.lost)
			continue
		}
		req.done <- h.start(req.start, req.pid)
		if h.lost != nil {
			launcherMu.Lock()
			launches = nil
			launcherMu.Unlock()
		}
	}
}

// home is the launcher thread's own namespaces.
type home struct {
	fds      []int  // per joinable
	inodes   []nsID // per joinable
	time     nsID   // the time namespace of the thread
	timeMade bool   // the thread's children get a time namespace of ckpt's making
	lost     error  // the thread could not return home
	tid      int
}

type nsID struct{ dev, ino uint64 }

func newHome() (*home, error) {
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return nil, fmt.Errorf("unshare the thread's fs: %w", err)
	}
	h := &home{tid: unix.Gettid()}
	for _, ns := range joinable {
		p := "/proc/thread-self/ns/" + ns.name
		id, err := nsIDOf(p)
		if err != nil {
			return nil, err
		}
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, err
		}
		h.fds, h.inodes = append(h.fds, fd), append(h.inodes, id)
	}
	h.time, _ = nsIDOf("/proc/thread-self/ns/time")
	return h, nil
}

// start enters pid's namespaces, calls start and returns home.
func (h *home) start(start func() error, pid int) error {
	var opened []int // indexes into joinable
	fds := make([]int, len(joinable))
	defer func() {
		for _, i := range opened {
			unix.Close(fds[i])
		}
	}()
	for i, ns := range joinable {
		p := fmt.Sprintf("/proc/%d/ns/%s", pid, ns.name)
		id, err := nsIDOf(p)
		if err != nil {
			return fmt.Errorf("the container's %s namespace: %w", ns.name, err)
		}
		if id == h.inodes[i] {
			continue
		}
		if fds[i], err = unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
			return fmt.Errorf("open the container's %s namespace: %w", ns.name, err)
		}
		opened = append(opened, i)
	}
	offsets := ""
	if id, err := nsIDOf(fmt.Sprintf("/proc/%d/ns/time", pid)); err == nil && id != h.time {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/timens_offsets", pid))
		if err != nil {
			return fmt.Errorf("the container's clock offsets: %w", err)
		}
		offsets = string(b)
	} else if h.timeMade {
		offsets = zeroOffsets
	}
	if offsets != "" {
		if err := h.makeTime(offsets); err != nil {
			return err
		}
	}

	var err error
	var entered []int
	for _, i := range opened {
		if err = unix.Setns(fds[i], joinable[i].flag); err != nil {
			err = fmt.Errorf("enter the container's %s namespace: %w", joinable[i].name, err)
			break
		}
		entered = append(entered, i)
	}
	if err == nil {
		err = start()
	}
	for _, i := range entered {
		if serr := unix.Setns(h.fds[i], joinable[i].flag); serr != nil && h.lost == nil {
			h.lost = fmt.Errorf("return to ckpt's %s namespace: %w", joinable[i].name, serr)
		}
	}
	return err
}

// makeTime gives the thread's children a new time namespace with these
// clock offsets. They can be set only before a process enters it, and
// only through the thread's own /proc entry (/proc/self is the main
// thread's).
func (h *home) makeTime(offsets string) error {
	if err := unix.Unshare(unix.CLONE_NEWTIME); err != nil {
		return fmt.Errorf("new time namespace: %w", err)
	}
	h.timeMade = true
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/timens_offsets", h.tid), []byte(offsets), 0); err != nil {
		return fmt.Errorf("set the container's clock offsets: %w", err)
	}
	return nil
}

func nsIDOf(path string) (nsID, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nsID{}, err
	}
	return nsID{st.Dev, st.Ino}, nil
}

// pidInContainer is pid as its own (innermost) pid namespace sees it: the
// last NSpid entry of /proc/<pid>/status.
func pidInContainer(pid int) (int, error) {
	if pid <= 0 {
		return 0, errors.New("no container process")
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "NSpid:"); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				break
			}
			return strconv.Atoi(f[len(f)-1])
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no NSpid in /proc/%d/status", pid)
}
