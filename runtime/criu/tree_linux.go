package criu

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ckpt-dev/ckpt/runtime/proc"
	"golang.org/x/sys/unix"
)

// A restore's criu forks the restored tree, and the tree's first tasks run
// criu's code until the restorer takes over. Killing criu alone leaves them:
// they hold the RPC socket's peer end (so no EOF ever comes) and spin or
// wait for criu's next stage forever. ckpt therefore kills criu's whole
// tree. Which processes are that tree:
//   - criu's descendants, through /proc/PID/task/TID/children, while criu
//     lives; the watchdog keeps the last list it saw (checked by start
//     time), since they are reparented once criu died;
//   - with rst_sibling, the restored root is forked with CLONE_PARENT and
//     is our child, not criu's: our children started no earlier than criu
//     whose executable is criu's binary. Once the restorer has switched the
//     root to the restored program, its pid is known to the caller (at
//     setup-namespaces) and the caller kills it; it is the restored pid
//     namespace's init, so the kernel kills the rest of the namespace.

// task is a process identified by pid and start time, so that a pid
// reused since is never signalled.
type task struct {
	pid   int
	start uint64
}

// startTime is pid's start time (clock ticks since boot).
func startTime(pid int) (uint64, bool) {
	st, err := proc.ReadStat(pid)
	return st.StartTime, err == nil
}

// descendants returns pid's descendants (not pid), depth first, bounded.
func descendants(pid int) []task {
	var out []task
	seen := map[int]bool{pid: true}
	stack := proc.Children(pid)
	for len(stack) > 0 && len(out) < 4096 {
		p := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[p] {
			continue
		}
		seen[p] = true
		if st, ok := startTime(p); ok {
			out = append(out, task{p, st})
			stack = append(stack, proc.Children(p)...)
		}
	}
	return out
}

// siblingsRunning returns our children started no earlier than criu
// (start time since) that run criu's binary: the root of a restored tree
// forked with rst_sibling, before the restorer replaced criu's code.
func siblingsRunning(binary string, since uint64) []task {
	var out []task
	if binary == "" {
		return nil
	}
	// /proc/PID/exe is the binary's real path.
	if real, err := filepath.EvalSymlinks(binary); err == nil {
		binary = real
	}
	for _, c := range proc.Children(os.Getpid()) {
		st, ok := startTime(c)
		if !ok || st < since {
			continue
		}
		exe, err := os.Readlink("/proc/" + strconv.Itoa(c) + "/exe")
		if err != nil || strings.TrimSuffix(exe, " (deleted)") != binary {
			continue
		}
		out = append(out, task{c, st})
	}
	return out
}

// killTasks sends SIGKILL to each task still alive with the same start
// time. It returns those it signalled.
func killTasks(tasks []task) []task {
	var hit []task
	for _, t := range tasks {
		if st, ok := startTime(t.pid); ok && st == t.start {
			if unix.Kill(t.pid, unix.SIGKILL) == nil {
				hit = append(hit, t)
			}
		}
	}
	return hit
}

// reapOwn collects the tasks among hit that are our children: without a
// reaper in this process (the CLI) nobody else would. Bounded: a task in
// uninterruptible sleep may take a moment to die.
func reapOwn(hit []task) {
	deadline := time.Now().Add(2 * time.Second)
	for _, t := range hit {
		for {
			var ws unix.WaitStatus
			got, err := unix.Wait4(t.pid, &ws, unix.WNOHANG, nil)
			if got == t.pid || err != nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}
