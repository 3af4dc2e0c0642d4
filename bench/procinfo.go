package main

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// shimPid finds the shim serving container id for the containerd at
// address, whatever the runtime: shims are started as
// `containerd-shim-<name>-v2 -namespace NS -id ID -address ADDRESS`.
func shimPid(address, id string) int {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
		if !strings.HasPrefix(filepath.Base(args[0]), "containerd-shim-") {
			continue
		}
		if flagValue(args, "-id") == id && flagValue(args, "-address") == address {
			return pid
		}
	}
	return 0
}

func flagValue(args []string, name string) string {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == name {
			return args[i+1]
		}
	}
	return ""
}

// memOf returns a process's resident set (VmRSS) and its high-water mark
// (VmHWM), in bytes; zero when the process is gone.
func memOf(pid int) (rss, hwm int64) {
	rss, hwm, _ = memOfAnon(pid)
	return rss, hwm
}

// memOfAnon is memOf with the anonymous share of the resident memory (heap,
// stacks): what the process itself allocated, as opposed to its binary's
// pages, which depend on how the page cache holds the file.
func memOfAnon(pid int) (rss, hwm, anon int64) {
	if pid <= 0 {
		return 0, 0, 0
	}
	f, err := os.Open(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "VmRSS":
			rss = kb << 10
		case "VmHWM":
			hwm = kb << 10
		case "RssAnon":
			anon = kb << 10
		}
	}
	return rss, hwm, anon
}

// dropPageCache writes back and drops the cached pages of a file.
func dropPageCache(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		return err
	}
	return unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
}
