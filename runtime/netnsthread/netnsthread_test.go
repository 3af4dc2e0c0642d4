package netnsthread

import (
	"errors"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

func TestInWithoutNamespace(t *testing.T) {
	called := false
	if err := In("", func() error { called = true; return nil }); err != nil || !called {
		t.Fatalf("In(\"\") = %v, fn called %t", err, called)
	}
	boom := errors.New("boom")
	if err := In("", func() error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("fork's error is lost: %v", err)
	}
}

func TestInMissingNamespace(t *testing.T) {
	called := false
	err := In("/proc/self/ns/does-not-exist", func() error { called = true; return nil })
	if err == nil || called || errors.Is(err, ErrStuck) {
		t.Fatalf("In(missing) = %v, fork called %t", err, called)
	}
}

// TestInChildJoinsNamespace: the child is in the target namespace, the
// forking thread is back in its own afterwards.
func TestInChildJoinsNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("CI: needs root")
		}
		t.Skip("SKIPPED, NOT TESTED: needs root (setns)")
	}
	holder := exec.Command("sleep", "60")
	holder.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNET}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { holder.Process.Kill(); holder.Wait() }()
	target := "/proc/" + strconv.Itoa(holder.Process.Pid) + "/ns/net"
	want := readlink(t, target)

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	own := readlink(t, "/proc/thread-self/ns/net")
	if own == want {
		t.Fatal("the holder did not get a namespace of its own")
	}
	child := exec.Command("readlink", "/proc/self/ns/net")
	var out strings.Builder
	child.Stdout = &out
	if err := In(target, child.Start); err != nil {
		t.Fatal(err)
	}
	if err := child.Wait(); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(out.String()); got != want {
		t.Fatalf("child in %s, want %s", got, want)
	}
	if back := readlink(t, "/proc/thread-self/ns/net"); back != own {
		t.Fatalf("the forking thread stayed in %s, want %s", back, own)
	}

	// Go: fn runs in the namespace, on a thread that goes back.
	var in string
	if err := Go(target, func() error { in = readlink(t, "/proc/thread-self/ns/net"); return nil }); err != nil || in != want {
		t.Fatalf("Go ran fn in %s (%v), want %s", in, err, want)
	}
	if err := Go("/proc/self/ns/does-not-exist", func() error { return nil }); err == nil {
		t.Fatal("Go entered a namespace that does not exist")
	}
}

func readlink(t *testing.T, path string) string {
	t.Helper()
	l, err := os.Readlink(path)
	if err != nil {
		t.Fatal(err)
	}
	return l
}
