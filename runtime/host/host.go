// Package host answers "can this machine checkpoint containers, and if not,
// why": CRIU and its features, the kernel, cgroups, runc, iptables.
package host

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime/debug"
	"slices"
	"strings"

	"github.com/ckpt-dev/ckpt/runtime/criu"
	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// MinCRIU is the oldest CRIU ckpt supports: 3.17 and older cannot dump on
// kernels >= 6.13 (vDSO layout).
var MinCRIU = criu.Version{Major: 4, Minor: 1}

// Item is one thing checked.
type Item struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Value  string `json:"value,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Optional items do not fail the check (pre-dump, lazy pages).
	Optional bool `json:"optional,omitempty"`
}

// Report is the whole answer.
type Report struct {
	OK           bool               `json:"ok"`
	Items        []Item             `json:"items"`
	Capabilities *criu.Capabilities `json:"criu,omitempty"`
}

// Check inspects the host. criuPath "" means criu from PATH.
func Check(ctx context.Context, criuPath string) *Report {
	r := &Report{OK: true}
	add := func(it Item) {
		if !it.OK && !it.Optional {
			r.OK = false
		}
		r.Items = append(r.Items, it)
	}

	var uts unix.Utsname
	kernel := "unknown"
	if unix.Uname(&uts) == nil {
		kernel = unix.ByteSliceToString(uts.Release[:])
	}
	add(Item{Name: "kernel", OK: true, Value: kernel})
	add(Item{Name: "root", OK: os.Geteuid() == 0, Value: fmt.Sprintf("uid %d", os.Geteuid()),
		Reason: "CRIU needs root (CAP_SYS_ADMIN, CAP_CHECKPOINT_RESTORE, ptrace)"})
	add(Item{Name: "cgroups", OK: true, Value: CgroupMode()})

	caps, err := criu.Probe(ctx, criuPath)
	if err != nil {
		add(Item{Name: "criu", OK: false, Reason: err.Error()})
	} else {
		r.Capabilities = caps
		it := Item{Name: "criu", OK: caps.Version.Int() >= MinCRIU.Int(), Value: fmt.Sprintf("%s at %s", caps.Version, caps.Path)}
		if !it.OK {
			it.Reason = fmt.Sprintf("CRIU %s is too old: ckpt needs >= %s (older CRIU cannot dump on this kernel's vDSO)", caps.Version, MinCRIU)
		}
		add(it)
		add(socketCheck(kernel, caps.Version))
		add(kernelCheck(ctx, caps.Path))
		add(kdatCacheCheck("/run"))
		if mounts, err := mountinfo.GetMounts(mountinfo.FSTypeFilter("cgroup", "cgroup2")); err == nil {
			add(dynmodsCheck(mounts))
		}
		add(tcpHashCheck(tcpChildEhash))
		add(Item{Name: "pre-dump (soft-dirty memory tracking)", OK: caps.Features.MemTrack, Optional: true,
			Value: yesNo(caps.Features.MemTrack), Reason: "the kernel has no soft-dirty tracking: iterative pre-dump is unavailable"})
		add(Item{Name: "lazy pages (userfaultfd)", OK: caps.Features.LazyPages, Optional: true,
			Value: yesNo(caps.Features.LazyPages), Reason: "userfaultfd is unavailable: lazy restore is off"})
	}

	if p, err := exec.LookPath("iptables-restore"); err != nil {
		add(Item{Name: "iptables-restore", OK: false, Reason: "CRIU locks a container's network with iptables-restore; install iptables"})
	} else {
		add(Item{Name: "iptables-restore", OK: true, Value: p})
	}
	add(runcCheck(ctx))
	return r
}

// kernelCheck runs CRIU's own CHECK request: it tries the kernel features a
// dump and restore need.
func kernelCheck(ctx context.Context, path string) Item {
	s, err := criu.Start(ctx, criu.Config{Path: path})
	if err != nil {
		return Item{Name: "criu check", OK: false, Reason: err.Error()}
	}
	defer s.Close()
	if err := s.Check(ctx); err != nil {
		return Item{Name: "criu check", OK: false, Reason: err.Error()}
	}
	return Item{Name: "criu check", OK: true, Value: "kernel supports checkpoint/restore"}
}

func runcCheck(ctx context.Context) Item {
	want := PinnedRuncVersion()
	p, err := exec.LookPath("runc")
	if err != nil {
		return Item{Name: "runc", OK: false, Reason: fmt.Sprintf("runc not found in PATH: ckpt needs runc %s", want)}
	}
	have, err := RuncVersion(ctx, p)
	if err != nil {
		return Item{Name: "runc", OK: false, Reason: err.Error()}
	}
	it := Item{Name: "runc", OK: want == "" || have == want, Value: fmt.Sprintf("%s at %s", have, p)}
	if !it.OK {
		it.Reason = fmt.Sprintf("ckpt writes runc's state with runc %s's types but %s is runc %s; install runc %s (scripts/setup.sh does)", want, p, have, want)
	}
	return it
}

// RuncVersion runs `runc --version` and returns the version, e.g. "1.5.2".
func RuncVersion(ctx context.Context, path string) (string, error) {
	out, err := exec.CommandContext(ctx, path, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("%s --version: %w", path, err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) >= 3 && f[0] == "runc" && f[1] == "version" {
			return f[2], nil
		}
	}
	return "", fmt.Errorf("%s --version printed no version: %q", path, out)
}

// PinnedRuncVersion is the runc version whose libcontainer types this
// binary was built with (go.mod's pin), without the "v".
func PinnedRuncVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	for _, d := range bi.Deps {
		if d.Path == "github.com/opencontainers/runc" {
			if d.Replace != nil {
				d = d.Replace
			}
			return strings.TrimPrefix(d.Version, "v")
		}
	}
	return ""
}

// CgroupMode is "v2", "v1" or "hybrid (v1 + v2)".
func CgroupMode() string {
	var st unix.Statfs_t
	if unix.Statfs("/sys/fs/cgroup", &st) != nil {
		return "unknown"
	}
	if st.Type == unix.CGROUP2_SUPER_MAGIC {
		return "v2"
	}
	if unix.Statfs("/sys/fs/cgroup/unified", &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
		return "hybrid (v1 + v2)"
	}
	return "v1"
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// socketCheck: CRIU before 4.2 asks every socket for SO_PASSCRED, which
// kernels >= 6.16 refuse for TCP and UDP ("Can't get 1:16 opt"), so it can
// dump no container that has one (CRIU issue 2718).
func socketCheck(kernel string, v criu.Version) Item {
	it := Item{Name: "sockets (TCP, UDP)", OK: true, Value: "CRIU can dump them on this kernel"}
	if kernelAtLeast(kernel, 6, 16) && !v.AtLeast(4, 2, 0) {
		it.OK = false
		it.Value = ""
		it.Reason = fmt.Sprintf("CRIU %s cannot dump TCP or UDP sockets on kernel %s (fixed in CRIU 4.2); scripts/setup.sh builds 4.2.1", v, kernel)
	}
	return it
}

// kernelAtLeast compares a release string ("6.18.44-foo") with major.minor.
func kernelAtLeast(release string, major, minor int) bool {
	var ma, mi int
	if _, err := fmt.Sscanf(release, "%d.%d", &ma, &mi); err != nil {
		return false
	}
	return ma > major || (ma == major && mi >= minor)
}

// kdatCacheCheck: CRIU keeps what it learnt about the kernel in
// /run/criu.kdat, and only on a tmpfs (the file must not outlive a boot).
// Elsewhere every CRIU run detects it again.
func kdatCacheCheck(run string) Item {
	var st unix.Statfs_t
	ok := unix.Statfs(run, &st) == nil && st.Type == unix.TMPFS_MAGIC
	return Item{Name: "CRIU kernel-feature cache", OK: ok, Optional: true, Value: yesNo(ok),
		Reason: run + " is not a tmpfs: every CRIU run detects the kernel's features again (15-25 ms per checkpoint and restore)"}
}

// dynmodsCheck reports whether the cgroup hierarchies favour dynamic
// changes. Without favordynmods, the first task moved between cgroups after
// a quiet while waits out an RCU grace period (5-20 ms): ckpt pays it
// ahead (runtime/cgroupfs), other runtimes in every create and restore. With it, forks and exits pay a little instead; it is the host's
// choice, so ckpt only reports it.
func dynmodsCheck(mounts []*mountinfo.Info) Item {
	it := Item{Name: "cgroup favordynmods", Optional: true, Value: "no",
		Reason: "the first move of a task between cgroups after a quiet while waits out an RCU grace period (5-20 ms; ckpt's shim pays it ahead, from its start, before the container's first move; other runtimes in full); " +
			"`mount -o remount,favordynmods` on a cgroup hierarchy (kernel >= 6.1) avoids it"}
	for _, m := range mounts {
		if slices.Contains(strings.Split(m.VFSOptions, ","), "favordynmods") {
			it.OK, it.Value = true, "yes ("+m.Mountpoint+")"
			break
		}
	}
	return it
}

// tcpChildEhash sizes the TCP hash table of network namespaces made from
// the host's (kernel >= 6.1); 0 shares the host's own.
const tcpChildEhash = "/proc/sys/net/ipv4/tcp_child_ehash_entries"

// tcpHashCheck: CRIU lists a container's TCP sockets while the container
// is frozen, once for IPv4 and once for IPv6, and the kernel walks every
// bucket of the namespace's TCP hash table each time. A namespace shares
// the host's table, sized by the host's memory (262144 buckets, 1.3 ms a
// walk on a 24 GiB host), unless the host gave new namespaces their own.
// The smaller table also lowers new namespaces' TIME-WAIT and SYN backlog
// limits, so it is the host's choice: ckpt only reports it.
func tcpHashCheck(path string) Item {
	it := Item{Name: "TCP hash table per network namespace", Optional: true, Value: "no",
		Reason: "CRIU walks a container's TCP hash table twice while the container is frozen, and a network namespace shares the host's, sized by its memory (~3 ms of the frozen time of an idle container on a 24 GiB host); " +
			"`sysctl -w net.ipv4.tcp_child_ehash_entries=16384` gives namespaces made afterwards their own (their tcp_max_tw_buckets becomes 8192 and tcp_max_syn_backlog 128)"}
	data, err := os.ReadFile(path)
	if err != nil {
		it.Value = "unavailable"
		it.Reason = "the kernel has no per-namespace TCP hash table (>= 6.1): CRIU walks the host's twice while a container is frozen"
		return it
	}
	if n := strings.TrimSpace(string(data)); n != "0" {
		it.OK, it.Value, it.Reason = true, "yes ("+n+" buckets for new namespaces)", ""
	}
	return it
}
