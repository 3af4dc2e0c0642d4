package shim

import (
	"bufio"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

// releaseMemory returns to the kernel the heap that a checkpoint, a
// restore or a container's start grew. CRIU's RPC messages, the image
// metadata, runc's state, the spec and the buffers of Create and Start
// are garbage once the call returns, but the shim then mostly idles for
// as long as its containers run: with little allocation the next GC
// cycle is far off, and the background scavenger returns freed pages
// slowly (never those under the heap goal), so every shim would keep
// that garbage resident. In a goroutine, so that the forced GC does not
// delay the reply to containerd. Once the shim has been quiet for
// idleDelay, idle trims it further.
func releaseMemory() {
	go debug.FreeOSMemory()
	idle.reset()
}

// idleDelay is how long after the last start, checkpoint or restore the
// shim counts as idle: a pod's containers start within it, and a client
// that checkpoints right after a start finds the shim as it was.
const idleDelay = 10 * time.Second

// keepCodeEnv set to 1 in the shim's environment (containerd's) keeps
// the binary's pages mapped (see trimCode).
const keepCodeEnv = "CKPT_SHIM_KEEP_CODE"

var idle = &idleTimer{delay: idleDelay, f: func() {
	debug.FreeOSMemory() // the garbage of the replies and events since
	if os.Getenv(keepCodeEnv) == "1" {
		return
	}
	if err := trimCode(); err != nil {
		// Only memory is at stake.
		log.L.WithError(err).Warn("unmap the binary's pages of an idle shim")
	}
}}

// idleTimer runs f once no reset came for delay.
type idleTimer struct {
	delay time.Duration
	f     func()
	mu    sync.Mutex
	t     *time.Timer
}

func (i *idleTimer) reset() {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.t == nil {
		i.t = time.AfterFunc(i.delay, i.f)
		return
	}
	i.t.Reset(i.delay)
}

// trimCode unmaps the pages of the shim's binary (code and read-only
// data) that this process has mapped. Starting and running a container
// maps most of the binary: the runtime's and every package's
// initialization, and the kernel's fault-around and readahead, which map
// up to 16 neighbouring pages on each fault; an idle shim runs a small
// part of it. The pages stay in the page cache, shared with every other
// ckpt shim and reclaimable, and a later call maps what it runs again
// with minor faults (0.04 ms per MiB here: all 13 MiB of a test binary
// in 0.6 ms). Only mappings that cannot have been written are dropped:
// MADV_DONTNEED on a private writable mapping would lose its data.
func trimCode() error {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/exe", &st); err != nil {
		return err
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return err
	}
	defer f.Close()
	spans, err := readOnlySpans(f, unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
	if err != nil {
		return err
	}
	relro, err := relroPages("/proc/self/exe")
	if err != nil {
		return err
	}
	for _, s := range withoutSpan(spans, relro) {
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, s.start, s.end-s.start, unix.MADV_DONTNEED); errno != 0 {
			return fmt.Errorf("madvise %#x-%#x: %w", s.start, s.end, errno)
		}
	}
	return nil
}

type span struct{ start, end uintptr }

// relroPages is the page range of the binary's PT_GNU_RELRO segment: in
// a dynamically linked binary the loader writes relocations there (the
// GOT's libc addresses, DT_DEBUG) and then makes the pages read-only, so
// they look like file pages in maps but hold data the file does not:
// dropping them would bring back the unrelocated bytes. A position
// independent binary's load address is not read here, so for one every
// page counts as RELRO's (nothing is trimmed).
func relroPages(exe string) (span, error) {
	f, err := elf.Open(exe)
	if err != nil {
		return span{}, err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type != elf.PT_GNU_RELRO {
			continue
		}
		if f.Type != elf.ET_EXEC {
			return span{0, ^uintptr(0)}, nil
		}
		page := uint64(os.Getpagesize())
		return span{uintptr(p.Vaddr &^ (page - 1)), uintptr((p.Vaddr + p.Memsz + page - 1) &^ (page - 1))}, nil
	}
	return span{}, nil
}

// withoutSpan cuts cut out of spans.
func withoutSpan(spans []span, cut span) []span {
	if cut.end <= cut.start {
		return spans
	}
	var out []span
	for _, s := range spans {
		if s.end <= cut.start || s.start >= cut.end {
			out = append(out, s)
			continue
		}
		if s.start < cut.start {
			out = append(out, span{s.start, cut.start})
		}
		if s.end > cut.end {
			out = append(out, span{cut.end, s.end})
		}
	}
	return out
}

// readOnlySpans are the mappings, in /proc/PID/maps form, of the file
// with the given device and inode that are neither writable nor shared.
func readOnlySpans(maps io.Reader, major, minor uint32, ino uint64) ([]span, error) {
	var spans []span
	sc := bufio.NewScanner(maps)
	for sc.Scan() {
		// start-end perms offset major:minor inode [path]
		f := strings.Fields(sc.Text())
		if len(f) < 5 || len(f[1]) != 4 || f[1][1] == 'w' || f[1][3] != 'p' {
			continue
		}
		if n, err := strconv.ParseUint(f[4], 10, 64); err != nil || n != ino {
			continue
		}
		maj, min, ok := strings.Cut(f[3], ":")
		if !ok || !hexIs(maj, major) || !hexIs(min, minor) {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		a, err1 := strconv.ParseUint(lo, 16, 64)
		b, err2 := strconv.ParseUint(hi, 16, 64)
		if !ok || err1 != nil || err2 != nil || b <= a {
			return nil, fmt.Errorf("maps: bad range %q", f[0])
		}
		spans = append(spans, span{uintptr(a), uintptr(b)})
	}
	return spans, sc.Err()
}

func hexIs(s string, v uint32) bool {
	n, err := strconv.ParseUint(s, 16, 32)
	return err == nil && uint32(n) == v
}
