package runc_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ckpt-dev/ckpt/runtime/container"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// TestListeningSocket: a server in the container's own network namespace
// is checkpointed with its listening TCP socket and answers again after
// the restore. (CRIU before 4.2 cannot dump any TCP or UDP socket on
// kernels >= 6.16: "Can't get 1:16 opt".)
func TestListeningSocket(t *testing.T) {
	c := newCtr(t, func(s *specs.Spec) {
		s.Process.Args = []string{"httpd", "-f", "-p", "127.0.0.1:8080", "-h", "/www"}
	})
	www := filepath.Join(c.bundle, "rootfs", "www")
	if err := os.MkdirAll(www, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(www, "index.html"), []byte("served-by-ckpt\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f := c.openOut()
	cmd := command(t, "runc", "--root", c.root, "run", "-d", "--bundle", c.bundle, c.id)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Run(); err != nil {
		t.Fatalf("runc run: %v\n%s", err, readFile(c.out))
	}
	get := func() string {
		out, _ := c.exec("wget", "-q", "-O", "-", "http://127.0.0.1:8080/")
		return out
	}
	waitFor(t, "httpd to answer", func() bool { return strings.Contains(get(), "served-by-ckpt") })
	_, before := c.state(c.id)

	for cycle := 1; cycle <= 2; cycle++ {
		images := c.checkpoint(container.CheckpointOptions{})
		pid := c.restore(images, c.id)
		if pid == before {
			t.Fatalf("cycle %d: restore returned the old pid %d", cycle, pid)
		}
		if out := get(); !strings.Contains(out, "served-by-ckpt") {
			t.Fatalf("cycle %d: the restored httpd does not answer on its socket: %q (log: %s)", cycle, out, tail(readFile(c.out)))
		}
		before = pid
	}
}
