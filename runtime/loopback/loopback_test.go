package loopback

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/ckpt-dev/ckpt/runtime/netnsthread"
	"golang.org/x/sys/unix"
)

// loFlags reads lo's flags in the network namespace at path.
func loFlags(t *testing.T, path string) uint16 {
	t.Helper()
	var flags uint16
	err := netnsthread.Go(path, func() error {
		return withLoopback(func(_ int, ifr *unix.Ifreq) error {
			flags = ifr.Uint16()
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return flags
}

func netnsOf(t *testing.T, path string) string {
	t.Helper()
	l, err := os.Readlink(path)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestLoopbackNetNS: a new namespace, lo up in it, and this process (all
// its threads) left where it was.
func TestLoopbackNetNS(t *testing.T) {
	needRoot(t)
	own := netnsOf(t, "/proc/self/ns/net")
	n := NewNetNS()
	defer n.Close()
	ctx := context.Background()
	path, err := n.Path(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if err := n.Wait(ctx); err != nil {
		t.Fatalf("a second wait: %v", err)
	}
	made := netnsOf(t, path)
	if made == own {
		t.Fatal("no new network namespace")
	}
	if loFlags(t, path)&unix.IFF_UP == 0 {
		t.Fatal("lo is down in the new namespace")
	}
	threads, _ := os.ReadDir("/proc/self/task")
	for _, th := range threads {
		if ns := netnsOf(t, fmt.Sprintf("/proc/self/task/%s/ns/net", th.Name())); ns != own {
			t.Fatalf("thread %s left in %s", th.Name(), ns)
		}
	}
	// criu joins it as a child would.
	out, err := exec.Command("/bin/sh", "-c", "readlink /proc/self/ns/net").Output()
	if err != nil || strings.TrimSpace(string(out)) != own {
		t.Fatalf("a child not started in the namespace is in %q (%v)", out, err)
	}
}

// TestLoopbackUp: the restore of a namespace CRIU made empty brings its
// lo up, from outside.
func TestLoopbackUp(t *testing.T) {
	needRoot(t)
	holder := exec.Command("sleep", "60")
	holder.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNET}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { holder.Process.Kill(); holder.Wait() }()
	path := fmt.Sprintf("/proc/%d/ns/net", holder.Process.Pid)
	if loFlags(t, path)&unix.IFF_UP != 0 {
		t.Fatal("lo is up in a new namespace")
	}
	if err := Up(holder.Process.Pid); err != nil {
		t.Fatal(err)
	}
	if loFlags(t, path)&unix.IFF_UP == 0 {
		t.Fatal("lo is still down")
	}
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatal("CI: needs root (network namespaces)")
	}
	t.Skip("SKIPPED, NOT TESTED: needs root (network namespaces)")
}
