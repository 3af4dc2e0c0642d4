package runc_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ckpt-dev/ckpt/runtime/container"
	"github.com/ckpt-dev/ckpt/runtime/image"
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
		// No CAP_NET_ADMIN, only lo: the namespace is dumped empty and
		// the restore brings lo up, which httpd's 127.0.0.1 needs.
		if md := readMetadata(t, images); !md.Options.LoopbackOnly || !md.Options.EmptyNetNS || !md.Options.CRIUInNetNS {
			t.Fatalf("cycle %d: a loopback-only namespace was dumped with its contents: %+v", cycle, md.Options)
		}
		// criu ran inside the namespace, so CRIU left it out of the image.
		if netns, _ := filepath.Glob(filepath.Join(images, "netns-*.img")); len(netns) > 0 {
			t.Fatalf("cycle %d: the image holds a network namespace: %v", cycle, netns)
		}
		pid := c.restore(images, c.id)
		if pid == before {
			t.Fatalf("cycle %d: restore returned the old pid %d", cycle, pid)
		}
		// The restored tasks live in criu's namespace: a new one, never
		// the host's.
		if ns, host := nsLink(t, fmt.Sprint(pid), "net"), nsLink(t, "self", "net"); ns == host {
			t.Fatalf("cycle %d: the restored container is in the host's network namespace %s", cycle, host)
		}
		if out := get(); !strings.Contains(out, "served-by-ckpt") {
			t.Fatalf("cycle %d: the restored httpd does not answer on its socket: %q (log: %s)", cycle, out, tail(readFile(c.out)))
		}
		before = pid
	}
}

// TestNetworkNamespaceWithNetAdmin: a container with CAP_NET_ADMIN may have
// changed its network namespace, so it is dumped with its contents: an
// address it added to lo is there after the restore.
func TestNetworkNamespaceWithNetAdmin(t *testing.T) {
	c := newCtr(t, func(s *specs.Spec) {
		caps := s.Process.Capabilities
		caps.Bounding = append(caps.Bounding, "CAP_NET_ADMIN")
		caps.Effective = append(caps.Effective, "CAP_NET_ADMIN")
		caps.Permitted = append(caps.Permitted, "CAP_NET_ADMIN")
		s.Process.Args = []string{"sh", "-c", "ip addr add 10.9.9.9/32 dev lo && " + counterScript}
	})
	c.start()
	images := c.checkpoint(container.CheckpointOptions{})
	if md := readMetadata(t, images); md.Options.LoopbackOnly || md.Options.EmptyNetNS {
		t.Fatalf("a namespace the container could change was dumped empty: %+v", md.Options)
	}
	before := c.last()
	c.restore(images, c.id)
	c.waitCount(before + 3)
	if out, err := c.exec("ip", "addr", "show", "dev", "lo"); err != nil || !strings.Contains(out, "10.9.9.9/32") {
		t.Fatalf("the address the container added is gone after the restore: %v\n%s", err, out)
	}
}

func readMetadata(t *testing.T, dir string) *image.Metadata {
	t.Helper()
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	md, err := image.ReadMetadata(d)
	if err != nil {
		t.Fatal(err)
	}
	return md
}
