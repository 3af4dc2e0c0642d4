// Package harness makes two "hosts" on one machine for ckpt's migration
// tests: two network namespaces joined by a veth pair, each with its own
// containerd (own root, state and socket, ckpt's shim) started in it, the
// target listening on TCP with mutual TLS from certificates made here.
// Each containerd is also a host of its own beyond the network
// (ctrd.WithOwnHost): own mount namespace with fresh /run/containerd/ckpt
// and /run/ckpt, own cgroup namespace under a per-host cgroup. So the same
// container id, namespace and spec can run on the source and the target
// at once, as in a post-copy move, without colliding on ckpt's runc state,
// restore records or cgroups (docs/testing.md, "Two hosts on one machine").
package harness

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Net is the two namespaces: Src and Dst are their names under /run/netns.
type Net struct {
	Src, Dst     string
	SrcIP, DstIP string
	// Silent is an address in the link's subnet that nothing answers.
	Silent string
}

// Subnet is the veth link's: a /29, so that Silent is on the link.
const (
	srcAddr = "10.250.0.1"
	dstAddr = "10.250.0.2"
	silent  = "10.250.0.5"
	prefix  = "/29"
)

// NewNet makes the namespaces (names start with tag, for the shared
// machine) and the link; lo is up in both.
func NewNet(tag string) (_ *Net, retErr error) {
	id := os.Getpid() % 100000
	n := &Net{
		Src: fmt.Sprintf("%s-src-%d", tag, id), Dst: fmt.Sprintf("%s-dst-%d", tag, id),
		SrcIP: srcAddr, DstIP: dstAddr, Silent: silent,
	}
	defer func() {
		if retErr != nil {
			n.Close()
		}
	}()
	vs, vd := fmt.Sprintf("%ss%d", tag, id), fmt.Sprintf("%sd%d", tag, id)
	steps := [][]string{
		{"netns", "add", n.Src},
		{"netns", "add", n.Dst},
		{"link", "add", vs, "type", "veth", "peer", "name", vd},
		{"link", "set", vs, "netns", n.Src},
		{"link", "set", vd, "netns", n.Dst},
		{"-n", n.Src, "addr", "add", srcAddr + prefix, "dev", vs},
		{"-n", n.Dst, "addr", "add", dstAddr + prefix, "dev", vd},
		{"-n", n.Src, "link", "set", vs, "up"},
		{"-n", n.Dst, "link", "set", vd, "up"},
		{"-n", n.Src, "link", "set", "lo", "up"},
		{"-n", n.Dst, "link", "set", "lo", "up"},
	}
	for _, s := range steps {
		if out, err := exec.Command("ip", s...).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("ip %s: %w: %s", strings.Join(s, " "), err, out)
		}
	}
	return n, nil
}

// Path is the namespace file of name, for nsenter --net.
func Path(name string) string { return filepath.Join("/run/netns", name) }

// Close deletes both namespaces (the veth pair goes with them).
func (n *Net) Close() error {
	var errs []error
	for _, ns := range []string{n.Src, n.Dst} {
		if _, err := os.Stat(Path(ns)); err != nil {
			continue
		}
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("ip netns del %s: %w: %s", ns, err, out))
		}
	}
	return errors.Join(errs...)
}
