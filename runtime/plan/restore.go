package plan

import (
	"errors"
	"fmt"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"github.com/ckpt-dev/ckpt/runtime/image"
	"github.com/opencontainers/runc/libcontainer/configs"
)

// Bind is a bind mount CRIU must recreate from the host: Dest in the
// container, Source on the host.
type Bind struct {
	Dest, Source string
}

// Restore is everything a RESTORE request is built from.
type Restore struct {
	// Config is the libcontainer config built from the bundle's spec.
	Config *configs.Config
	// Root is the private mountpoint the rootfs is bound on (criu-root).
	Root        string
	ImagesDirFd int32
	WorkDirFd   int32 // < 0: none
	LogFile     string
	// Options are the checkpoint's (ckpt.json), EmptyNetNS possibly
	// forced on by the caller.
	Options image.Options
	// Descriptors is descriptors.json: pipes among them are inherited
	// from criu's own fds 0-2.
	Descriptors []string
	// Stdio is ckpt.json's stdio: external files are inherited likewise.
	Stdio    []image.Stdio
	CgroupV2 bool
	// CgroupYard: as Checkpoint's.
	CgroupYard string
	// FreshTmpfs map the image's empty tmpfs keys (Dest) to the new
	// tmpfs mounts CRIU binds in their place (Source).
	FreshTmpfs []Bind
	// CgroupBinds are the v1 cgroup bind mounts with their new sources.
	CgroupBinds []Bind
	// NsFds are criu's fd numbers of the files of ExternalNamespaces.
	NsFds       map[configs.NamespaceType]int32
	ResolveDest func(dest string) string
	Caps        Caps
	// LazyPages restores without the memory: a criu lazy-pages daemon
	// fills it in on demand through userfaultfd.
	LazyPages bool
}

// Opts builds the request options.
func (p *Restore) Opts() (*rpc.CriuOpts, error) {
	cfg := p.Config
	if cfg == nil {
		return nil, errors.New("restore plan: no container config")
	}
	if p.Root == "" {
		return nil, errors.New("restore plan: no root")
	}
	o := p.Options
	if o.PreDump {
		return nil, errors.New("the image is a pre-dump: it only holds memory for a later checkpoint's --parent-path and cannot be restored")
	}
	if o.LazyPages && !p.LazyPages {
		return nil, errors.New("the checkpoint was dumped with lazy pages: its memory is not in the images but at the source's page server; restore it lazily from there")
	}
	mode, err := CgroupsMode(o.CgroupsMode)
	if err != nil {
		return nil, err
	}
	logFile := p.LogFile
	if logFile == "" {
		logFile = "restore.log"
	}
	opts := &rpc.CriuOpts{
		ImagesDirFd:       ptr(p.ImagesDirFd),
		LogLevel:          ptr(int32(LogLevel)),
		LogFile:           ptr(logFile),
		Root:              ptr(p.Root),
		ManageCgroups:     ptr(true),
		ManageCgroupsMode: mode.Enum(),
		NotifyScripts:     ptr(true),
		// The restored init becomes our child, not criu's: criu exits.
		RstSibling: ptr(true),
		// Device nodes may have other numbers here; open them by path.
		EvasiveDevices:  ptr(true),
		ShellJob:        ptr(o.ShellJob),
		ExtUnixSk:       ptr(o.ExtUnixSK),
		TcpEstablished:  ptr(o.TCPEstablished),
		FileLocks:       ptr(o.FileLocks),
		OrphanPtsMaster: ptr(p.Caps.OrphanPtsMaster),
		ConfigFile:      criuConfigFile(cfg),
	}
	setShared(opts, cfg, o, p.Caps, p.WorkDirFd)
	if p.LazyPages {
		opts.LazyPages = ptr(true)
	}
	if p.CgroupYard != "" {
		opts.CgroupYard = ptr(p.CgroupYard)
	}
	if err := p.namespaces(opts); err != nil {
		return nil, err
	}

	for _, m := range cfg.Mounts {
		switch m.Device {
		case "bind":
			addExtMnt(opts, relDest(p.ResolveDest, m.Destination), m.Source)
		case "cgroup":
			if !cgroupBindsApply(cfg, p.CgroupV2) {
				continue
			}
			for _, b := range p.CgroupBinds {
				addExtMnt(opts, relDest(p.ResolveDest, b.Dest), b.Source)
			}
		}
	}
	if len(cfg.MaskPaths) > 0 {
		addExtMnt(opts, "/dev/null", "/dev/null")
	}
	for _, d := range cfg.Devices {
		addExtMnt(opts, d.Path, d.Path)
	}
	for _, t := range p.FreshTmpfs {
		addExtMnt(opts, t.Dest, t.Source)
	}
	p.stdio(opts)
	return opts, nil
}

func (p *Restore) namespaces(opts *rpc.CriuOpts) error {
	cfg := p.Config
	if o := p.Options; o.ExternalNetNS != (cfg.Namespaces.PathOf(configs.NEWNET) != "") {
		return nsMismatch("network", o.ExternalNetNS)
	}
	if o := p.Options; o.ExternalPidNS != (cfg.Namespaces.PathOf(configs.NEWPID) != "") {
		return nsMismatch("pid", o.ExternalPidNS)
	}
	for _, ns := range cfg.Namespaces {
		if ns.Path == "" {
			continue
		}
		switch ns.Type {
		case configs.NEWNET, configs.NEWPID:
			ok := (ns.Type == configs.NEWNET && p.Caps.ExternalNetNS) || (ns.Type == configs.NEWPID && p.Caps.ExternalPidNS)
			if !ok {
				return fmt.Errorf("this CRIU cannot restore into an existing %s namespace (needs CRIU >= 3.11 for net, 3.15 for pid)", configs.NsName(ns.Type))
			}
			fd, ok := p.NsFds[ns.Type]
			if !ok {
				return fmt.Errorf("restore plan: no file for the %s namespace at %s", configs.NsName(ns.Type), ns.Path)
			}
			opts.InheritFd = append(opts.InheritFd, &rpc.InheritFd{Key: ptr(ExtNSKey(ns.Type)), Fd: ptr(fd)})
		case configs.NEWCGROUP:
			return fmt.Errorf("cannot restore into an existing cgroup namespace (%s): CRIU cannot join one", ns.Path)
		default:
			opts.JoinNs = append(opts.JoinNs, &rpc.JoinNamespace{Ns: ptr(configs.NsName(ns.Type)), NsFile: ptr(ns.Path)})
		}
	}
	return nil
}

func nsMismatch(what string, wasExternal bool) error {
	if wasExternal {
		return fmt.Errorf("the checkpoint was made in an existing %s namespace (a path in the spec), which it does not contain: the spec must give one to restore into", what)
	}
	return fmt.Errorf("the checkpoint contains the container's own %s namespace, but the spec asks to join an existing one", what)
}

// stdio maps the new stdio (criu's fds 0-2) onto what the init had: pipes
// by their pipe:[ino] name, external files by their file[...] key.
func (p *Restore) stdio(opts *rpc.CriuOpts) {
	seen := map[string]bool{}
	add := func(key string, fd int) {
		if key == "" || seen[key] {
			return
		}
		seen[key] = true
		opts.InheritFd = append(opts.InheritFd, &rpc.InheritFd{Key: ptr(key), Fd: ptr(int32(fd))})
	}
	for i, d := range p.Descriptors {
		if i < 3 && image.IsPipe(d) {
			add(d, i)
		}
	}
	for _, s := range p.Stdio {
		if s.External != "" && s.Fd >= 0 && s.Fd < 3 {
			add(s.External, s.Fd)
		}
	}
}
