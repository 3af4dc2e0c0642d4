package main

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/ckpt-dev/ckpt/internal/ctrd"
	"golang.org/x/sys/unix"
)

// shimPid finds the shim serving container id for the containerd at
// address, whatever the runtime.
func shimPid(address, id string) int { return ctrd.Shims(address)[id] }

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
