package loopback

import (
	"fmt"
	"net"
	"strings"

	"github.com/ckpt-dev/ckpt/runtime/plan"
	"github.com/ckpt-dev/ckpt/runtime/runcstate"
	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Most containers that own their network namespace hold nothing in it but
// the loopback runc brought up, and cannot change that: without
// CAP_NET_ADMIN no process in the container can add a link, an address, a
// route, a rule or a sysctl. CRIU would still dump and restore the whole
// namespace, running ip, iptables-save and ip6tables-save (legacy and nft)
// at the dump and their restore counterparts at the restore: a third of its
// time on an idle container. Such a namespace is dumped empty instead, and
// the restore brings its loopback up again, which gives the same
// namespace: lo up with 127.0.0.1/8 and ::1/128.

// capNetAdmin is CAP_NET_ADMIN's bit in /proc/<pid>/status's Cap* masks.
const capNetAdmin = 12

// Only reports whether the container's own network namespace is
// just an up loopback the container cannot have changed; reason says why
// not, for the debug log.
func Only(cfg *configs.Config, pid int) (ok bool, reason string) {
	if !plan.OwnsNetNS(cfg) {
		return false, "the network namespace is not the container's own"
	}
	for k := range cfg.Sysctl {
		if strings.HasPrefix(k, "net.") {
			return false, "the spec sets network sysctls"
		}
	}
	bounding, err := runcstate.CapBounding(pid)
	if err != nil {
		return false, err.Error()
	}
	if bounding&(1<<capNetAdmin) != 0 {
		return false, "the container may have CAP_NET_ADMIN"
	}
	if err := onlyLoopback(pid); err != nil {
		return false, err.Error()
	}
	return true, ""
}

// onlyLoopback checks, as a second line, what the capability rules out: a
// process exec'd with more privileges may have changed the namespace.
func onlyLoopback(pid int) error {
	h, closeNS, err := netlinkAt(pid)
	if err != nil {
		return err
	}
	defer closeNS()
	links, err := h.LinkList()
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	if len(links) != 1 || links[0].Attrs().Name != "lo" || links[0].Attrs().Flags&net.FlagUp == 0 {
		return fmt.Errorf("the network namespace has %d links besides an up lo", len(links)-1)
	}
	addrs, err := h.AddrList(links[0], netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		if s := a.IPNet.String(); s != "127.0.0.1/8" && s != "::1/128" {
			return fmt.Errorf("lo has address %s", s)
		}
	}
	routes, err := h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		// The kernel's own route for ::1 on lo sits in the main table.
		if r.Dst == nil || r.Dst.String() != "::1/128" {
			return fmt.Errorf("the main routing table has a route to %v", r.Dst)
		}
	}
	return nil
}

// netlinkAt is a netlink handle in pid's network namespace (its socket is
// made there; this thread stays where it is).
func netlinkAt(pid int) (*netlink.Handle, func(), error) {
	ns, err := netns.GetFromPath(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		return nil, nil, fmt.Errorf("the container's network namespace: %w", err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		return nil, nil, fmt.Errorf("netlink in the container's network namespace: %w", err)
	}
	return h, func() { h.Close(); ns.Close() }, nil
}
