package runc_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ckpt-dev/ckpt/hooks"
	"github.com/ckpt-dev/ckpt/runtime/container"
	"github.com/ckpt-dev/ckpt/runtime/image"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// TestListeningSocket: an httpd on 127.0.0.1 answers after two cycles. Its
// namespace holds only lo and it has no CAP_NET_ADMIN: criu runs inside
// the namespace, so the image holds none and the restore makes a new one
// with lo up; where the container declares action scripts, which may
// expect CRIU's network-lock stage, the namespace is dumped empty instead
// and lo is brought up at setup-namespaces.
func TestListeningSocket(t *testing.T) {
	for _, tt := range []struct {
		name    string
		scripts bool
	}{{"criu in the namespace", false}, {"with action scripts", true}} {
		t.Run(tt.name, func(t *testing.T) {
			script := filepath.Join(t.TempDir(), "noop.sh")
			if err := os.WriteFile(script, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			c := newCtr(t, func(s *specs.Spec) {
				s.Process.Args = []string{"httpd", "-f", "-p", "127.0.0.1:8080", "-h", "/www"}
				if tt.scripts {
					s.Annotations = map[string]string{hooks.ActionScriptAnnotation: script}
				}
			})
			listeningSocketCycles(t, c, !tt.scripts)
		})
	}
}

func listeningSocketCycles(t *testing.T, c *ctr, criuInNetNS bool) {
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
		md := readMetadata(t, images)
		if !md.Options.LoopbackOnly || !md.Options.EmptyNetNS || md.Options.CRIUInNetNS != criuInNetNS {
			t.Fatalf("cycle %d: a loopback-only namespace was dumped as %+v", cycle, md.Options)
		}
		if netns, _ := filepath.Glob(filepath.Join(images, "netns-*.img")); len(netns) > 0 {
			t.Fatalf("cycle %d: the image holds a network namespace: %v", cycle, netns)
		}
		pid := c.restore(images, c.id)
		if pid == before {
			t.Fatalf("cycle %d: restore returned the old pid %d", cycle, pid)
		}
		// A new namespace, never the host's.
		if ns, host := nsLink(t, fmt.Sprint(pid), "net"), nsLink(t, "self", "net"); ns == host {
			t.Fatalf("cycle %d: the restored container is in the host's network namespace %s", cycle, host)
		}
		// lo is up: the kernel gave it ::1, which it does on up only.
		if v6 := readFile(fmt.Sprintf("/proc/%d/net/if_inet6", pid)); !strings.Contains(v6, " lo") {
			t.Fatalf("cycle %d: lo has no ::1, it is down: %q", cycle, v6)
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
