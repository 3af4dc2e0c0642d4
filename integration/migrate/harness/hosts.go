package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	ctrd "github.com/ckpt-dev/ckpt/integration/containerd/harness"
)

// DstPort is the target's mutual-TLS endpoint for containerd's API (a
// TLSProxy); CRIPort is containerd's own tcp_address on the main target,
// which serves only CRI.
const (
	DstPort = 7443
	CRIPort = 7543
)

// Hosts is a source and a target "host": each a containerd in its own
// network namespace, the target's API also on DstIP:DstPort with mutual
// TLS (and containerd's own tcp_address, with TLS, on CRIPort). Both use
// the same containerd namespace, as a container keeps its namespace
// across a move. Each daemon is a host of its own (ctrd.WithOwnHost): its
// own mount namespace with fresh /run/containerd/ckpt and /run/ckpt, and
// its own cgroup namespace under a per-host cgroup, so that the same
// container id can exist on both at once, as during a post-copy move
// (the source frozen, the target restored).
type Hosts struct {
	Dir      string
	Net      *Net
	PKI      *PKI // the target's CA, server and client certificates
	Src, Dst *ctrd.Daemon

	tag     string // names the hosts' cgroups
	more    []*ctrd.Daemon
	proxies []*TLSProxy
}

// Start makes the network and both daemons; rootfs is the image's root
// filesystem (testutil.Rootfs), imported into each.
func Start(ctx context.Context, rootfs, tag string) (_ *Hosts, retErr error) {
	dir, err := os.MkdirTemp("", "ckpt-"+tag)
	if err != nil {
		return nil, err
	}
	h := &Hosts{Dir: dir, tag: tag}
	defer func() {
		if retErr != nil {
			h.Stop()
		}
	}()
	if h.Net, err = NewNet(tag); err != nil {
		return nil, err
	}
	if h.PKI, err = NewPKI(filepath.Join(dir, "pki"), tag, net.ParseIP(h.Net.DstIP)); err != nil {
		return nil, fmt.Errorf("certificates: %w", err)
	}
	if h.Src, err = ctrd.Start(ctx, rootfs, ctrd.WithNetNS(Path(h.Net.Src)), ctrd.WithOwnHost(h.tag+"-src")); err != nil {
		return nil, fmt.Errorf("source containerd: %w", err)
	}
	tcp := ctrd.WithTCP(ctrd.TCP{Address: h.Addr(CRIPort), CA: h.PKI.CA, Cert: h.PKI.ServerCert, Key: h.PKI.ServerKey})
	if h.Dst, err = h.startTarget(ctx, rootfs, DstPort, tcp); err != nil {
		return nil, fmt.Errorf("target containerd: %w", err)
	}
	return h, nil
}

// StartTarget starts one more target in the target's namespace, on port,
// with the same certificates: a host with something missing (opts).
func (h *Hosts) StartTarget(ctx context.Context, rootfs string, port int, opts ...ctrd.Option) (*ctrd.Daemon, error) {
	d, err := h.startTarget(ctx, rootfs, port, opts...)
	if err != nil {
		return nil, err
	}
	h.more = append(h.more, d)
	return d, nil
}

func (h *Hosts) startTarget(ctx context.Context, rootfs string, port int, opts ...ctrd.Option) (*ctrd.Daemon, error) {
	// Each target is a host of its own, though they share the network.
	name := h.tag + "-dst"
	if h.Dst != nil {
		name = fmt.Sprintf("%s-dst%d", h.tag, len(h.more)+2)
	}
	d, err := ctrd.Start(ctx, rootfs, append([]ctrd.Option{ctrd.WithNetNS(Path(h.Net.Dst)), ctrd.WithOwnHost(name)}, opts...)...)
	if err != nil {
		return nil, err
	}
	x, err := NewTLSProxy(Path(h.Net.Dst), h.Addr(port), d.Address, h.PKI)
	if err != nil {
		d.Stop()
		return nil, err
	}
	h.proxies = append(h.proxies, x)
	return d, nil
}

// Addr is HOST:PORT of a target port.
func (h *Hosts) Addr(port int) string {
	return net.JoinHostPort(h.Net.DstIP, fmt.Sprint(port))
}

// Stop stops every daemon, deletes the namespaces and Dir.
func (h *Hosts) Stop() error {
	var errs []error
	for _, x := range h.proxies {
		x.Close()
	}
	for _, d := range append(h.more, h.Dst, h.Src) {
		if d != nil {
			errs = append(errs, d.Stop())
		}
	}
	if h.Net != nil {
		errs = append(errs, h.Net.Close())
	}
	errs = append(errs, os.RemoveAll(h.Dir))
	return errors.Join(errs...)
}
