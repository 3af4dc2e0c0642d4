package criu

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

func TestForkInWithoutNamespaceJustForks(t *testing.T) {
	called := false
	if err := forkIn("", func() error { called = true; return nil }); err != nil || !called {
		t.Fatalf("forkIn(\"\") = %v, fork called %t", err, called)
	}
	boom := errors.New("boom")
	if err := forkIn("", func() error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("fork's error is lost: %v", err)
	}
}

func TestForkInMissingNamespace(t *testing.T) {
	called := false
	err := forkIn("/proc/self/ns/does-not-exist", func() error { called = true; return nil })
	if err == nil || called || errors.Is(err, errStuckInNetNS) {
		t.Fatalf("forkIn(missing) = %v, fork called %t", err, called)
	}
}

// TestForkInChildJoinsNamespace: the child is in the target namespace, the
// forking thread is back in its own afterwards.
func TestForkInChildJoinsNamespace(t *testing.T) {
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
	if err := forkIn(target, child.Start); err != nil {
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
}

func readlink(t *testing.T, path string) string {
	t.Helper()
	l, err := os.Readlink(path)
	if err != nil {
		t.Fatal(err)
	}
	return l
}
