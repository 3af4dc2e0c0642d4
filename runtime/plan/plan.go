// Package plan turns a container's configuration, runc's state and the
// user's options into the options of one CRIU request. It does no I/O:
// whatever it needs from the host (a namespace's inode, whether a masked
// path is a file, where a symlinked mount destination really is) is looked
// up by the caller and handed in, so every rule here is unit-tested.
//
// The rules follow runc's libcontainer/criu_linux.go (see
// docs/DESIGN.md and the reference notes): ext_mnt for bind mounts, cgroup
// v1 binds, masked files and device nodes; external net/pid namespaces;
// freezer; and, beyond runc, stdio files outside the container's mounts
// dumped as external files so a restore can hand in new ones.
package plan

import (
	"fmt"
	"slices"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"github.com/ckpt-dev/ckpt/runtime/criu"
	"github.com/ckpt-dev/ckpt/runtime/image"
	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"
)

// LogLevel is CRIU's log level for every request: 4 (debug) is what runc
// uses, and the log is the only trace of a failure.
const LogLevel = 4

// Caps are the CRIU capabilities the plans depend on.
type Caps struct {
	OrphanPtsMaster bool
	ExternalNetNS   bool
	ExternalPidNS   bool
	CgroupV2Freezer bool
	NetworkLockSkip bool
}

// CapsOf extracts Caps from a probed criu.
func CapsOf(c *criu.Capabilities) Caps {
	if c == nil {
		return Caps{}
	}
	return Caps{
		OrphanPtsMaster: c.OrphanPtsMaster(),
		ExternalNetNS:   c.ExternalNetNS(),
		ExternalPidNS:   c.ExternalPidNS(),
		CgroupV2Freezer: c.CgroupV2Freezer(),
		NetworkLockSkip: c.NetworkLockSkip(),
	}
}

// CgroupsMode parses --manage-cgroups-mode ("" is CRIU's default, soft).
func CgroupsMode(mode string) (rpc.CriuCgMode, error) {
	switch mode {
	case "", "default":
		return rpc.CriuCgMode_DEFAULT, nil
	case "soft":
		return rpc.CriuCgMode_SOFT, nil
	case "full":
		return rpc.CriuCgMode_FULL, nil
	case "strict":
		return rpc.CriuCgMode_STRICT, nil
	case "ignore":
		return rpc.CriuCgMode_IGNORE, nil
	}
	return 0, fmt.Errorf("invalid cgroups mode %q: want default, soft, full, strict or ignore", mode)
}

// ExtNSKey is the key CRIU knows an external namespace by, both in
// `external` at dump and `inherit_fd` at restore. runc uses the same keys,
// so images are interchangeable.
func ExtNSKey(t configs.NamespaceType) string {
	switch t {
	case configs.NEWNET:
		return "extRootNetNS"
	case configs.NEWPID:
		return "extRootPidNS"
	}
	return ""
}

// ExternalNamespaces are the namespaces CRIU treats as external: net and pid
// namespaces the spec gives a path for. The order is the order restore
// passes their files to criu.
func ExternalNamespaces(cfg *configs.Config) []configs.Namespace {
	var out []configs.Namespace
	for _, t := range []configs.NamespaceType{configs.NEWNET, configs.NEWPID} {
		if p := cfg.Namespaces.PathOf(t); p != "" {
			out = append(out, configs.Namespace{Type: t, Path: p})
		}
	}
	return out
}

// OwnsNetNS reports whether the container has a network namespace of its
// own (CRIU dumps it, or creates an empty one with empty_ns).
func OwnsNetNS(cfg *configs.Config) bool {
	return cfg.Namespaces.Contains(configs.NEWNET) && cfg.Namespaces.PathOf(configs.NEWNET) == ""
}

// criuConfigFile honours the org.criu.config annotation runc defined: a
// CRIU config file for this container. Unlike runc, ckpt reads no config
// file by default: the checkpoint's own options are re-applied instead.
func criuConfigFile(cfg *configs.Config) *string {
	for _, l := range cfg.Labels {
		if v, ok := strings.CutPrefix(l, "org.criu.config="); ok && v != "" {
			return &v
		}
	}
	return nil
}

// cgroupBindsApply reports whether a cgroup mount is, for CRIU, a set of
// external bind mounts: cgroup v1 without a cgroup namespace, where runc
// bind-mounts each hierarchy's container cgroup.
func cgroupBindsApply(cfg *configs.Config, cgroupV2 bool) bool {
	return !cgroupV2 && !cfg.Namespaces.Contains(configs.NEWCGROUP)
}

// relDest returns a mount's destination as CRIU sees it, relative to the
// root with symlinks resolved inside it.
func relDest(resolve func(string) string, dest string) string {
	if resolve != nil {
		if r := resolve(dest); r != "" {
			return r
		}
	}
	return dest
}

func extMnt(key, val string) *rpc.ExtMountMap { return &rpc.ExtMountMap{Key: &key, Val: &val} }

// addExtMnt appends key unless already mapped: CRIU refuses duplicate
// keys, and a device node can also be a bind mount.
func addExtMnt(o *rpc.CriuOpts, key, val string) {
	if slices.ContainsFunc(o.ExtMnt, func(m *rpc.ExtMountMap) bool { return m.GetKey() == key }) {
		return
	}
	o.ExtMnt = append(o.ExtMnt, extMnt(key, val))
}

func ptr[T any](v T) *T { return &v }

// networkLock is the lock method for a dump or restore: none for a
// namespace that is only a loopback (see LoopbackOnly), whose sockets can
// only talk to each other, all of them frozen together. Locking would cost
// two iptables-restore runs to lock and two to unlock.
func networkLock(o image.Options, caps Caps) *rpc.CriuNetworkLockMethod {
	if o.LoopbackOnly && o.EmptyNetNS && caps.NetworkLockSkip {
		return rpc.CriuNetworkLockMethod_SKIP.Enum()
	}
	return nil
}

// setShared sets the options a dump and a restore of the same container
// take alike: the network lock, the work dir, an empty network namespace.
func setShared(opts *rpc.CriuOpts, cfg *configs.Config, o image.Options, caps Caps, workDirFd int32) {
	opts.NetworkLock = networkLock(o, caps)
	if workDirFd >= 0 {
		opts.WorkDirFd = ptr(workDirFd)
	}
	if o.EmptyNetNS && OwnsNetNS(cfg) {
		opts.EmptyNs = ptr(uint32(unix.CLONE_NEWNET))
	}
}
