package plan

import (
	"errors"
	"fmt"
	"path"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"github.com/ckpt-dev/ckpt/runtime/image"
	"github.com/opencontainers/runc/libcontainer/configs"
)

// Checkpoint is everything a DUMP (or PRE_DUMP) request is built from.
type Checkpoint struct {
	// Config is runc's config of the running container (from state.json).
	Config  *configs.Config
	InitPid int
	// ImagesDirFd and WorkDirFd are fds in the calling process (CRIU opens
	// them through /proc/<caller>/fd); WorkDirFd < 0 means none.
	ImagesDirFd int32
	WorkDirFd   int32
	LogFile     string
	// FreezeCgroup is the container's freezer cgroup ("" lets CRIU use
	// ptrace to stop the tasks).
	FreezeCgroup string
	// CgroupV2 is a unified-only host: a cgroup mount is a real mount.
	CgroupV2 bool
	// CgroupV1Hierarchies are the basenames of the host's cgroup v1
	// mountpoints ("cpu,cpuacct", "systemd"): a v1 cgroup mount at D is
	// the bind mounts D/<basename>.
	CgroupV1Hierarchies []string
	// CgroupYard is a directory holding every cgroup hierarchy, mounted,
	// under CRIU's names ("" lets CRIU mount its own).
	CgroupYard string
	// MaskedFiles are the masked paths that are files in the container
	// (runc bind-mounts /dev/null on them; masked dirs are tmpfs, which
	// CRIU dumps).
	MaskedFiles []string
	// FreshTmpfs are the empty tmpfs mounts dumped as external mounts.
	FreshTmpfs []image.FreshTmpfs
	// NsInodes are the inodes of the namespaces ExternalNamespaces lists.
	NsInodes map[configs.NamespaceType]uint64
	// ExternalFiles are CRIU keys ("file[mnt_id:inode]") of the init's
	// stdio files that live outside the container's mounts.
	ExternalFiles []string
	// ResolveDest maps a mount destination to where it is inside the
	// rootfs, symlinks resolved in the rootfs (nil: as given).
	ResolveDest func(dest string) string
	Options     image.Options
	Caps        Caps
	// Lazy leaves the memory out of the images: CRIU serves it from a
	// page server here once they are written (nil: a full dump).
	Lazy *PageServer
}

// Normalize returns opts as they apply to cfg: empty_ns only for a network
// namespace of the container's own, and the external namespaces recorded.
func Normalize(cfg *configs.Config, opts image.Options) image.Options {
	if !OwnsNetNS(cfg) {
		opts.EmptyNetNS = false
	}
	opts.ExternalNetNS = cfg.Namespaces.PathOf(configs.NEWNET) != ""
	opts.ExternalPidNS = cfg.Namespaces.PathOf(configs.NEWPID) != ""
	return opts
}

// Opts builds the request options.
func (p *Checkpoint) Opts() (*rpc.CriuOpts, error) {
	cfg := p.Config
	if cfg == nil {
		return nil, errors.New("checkpoint plan: no container config")
	}
	if p.InitPid <= 0 {
		return nil, errors.New("checkpoint plan: no init pid")
	}
	mode, err := CgroupsMode(p.Options.CgroupsMode)
	if err != nil {
		return nil, err
	}
	o := p.Options
	logFile := p.LogFile
	if logFile == "" {
		logFile = "dump.log"
	}
	opts := &rpc.CriuOpts{
		ImagesDirFd:       ptr(p.ImagesDirFd),
		LogLevel:          ptr(int32(LogLevel)),
		LogFile:           ptr(logFile),
		Root:              ptr(cfg.Rootfs),
		ManageCgroups:     ptr(true),
		ManageCgroupsMode: mode.Enum(),
		NotifyScripts:     ptr(true),
		Pid:               ptr(int32(p.InitPid)),
		ShellJob:          ptr(o.ShellJob),
		LeaveRunning:      ptr(o.LeaveRunning),
		TcpEstablished:    ptr(o.TCPEstablished),
		ExtUnixSk:         ptr(o.ExtUnixSK),
		FileLocks:         ptr(o.FileLocks),
		OrphanPtsMaster:   ptr(p.Caps.OrphanPtsMaster),
		ConfigFile:        criuConfigFile(cfg),
	}
	setShared(opts, cfg, o, p.Caps, p.WorkDirFd)
	for _, ns := range ExternalNamespaces(cfg) {
		if err := p.checkExtNS(ns.Type); err != nil {
			return nil, err
		}
		ino, ok := p.NsInodes[ns.Type]
		if !ok {
			return nil, fmt.Errorf("checkpoint plan: no inode for the %s namespace at %s", configs.NsName(ns.Type), ns.Path)
		}
		opts.External = append(opts.External, fmt.Sprintf("%s[%d]:%s", configs.NsName(ns.Type), ino, ExtNSKey(ns.Type)))
	}
	if p.CgroupYard != "" {
		opts.CgroupYard = ptr(p.CgroupYard)
	}
	if p.FreezeCgroup != "" && (!p.CgroupV2 || p.Caps.CgroupV2Freezer) {
		opts.FreezeCgroup = ptr(p.FreezeCgroup)
	}
	if o.ParentPath != "" {
		// Pages unchanged since the parent (pre-)dump are not written again.
		opts.ParentImg = ptr(o.ParentPath)
		opts.TrackMem = ptr(true)
	}
	if o.PreDump && p.Lazy != nil {
		return nil, errors.New("checkpoint plan: a pre-dump cannot be lazy")
	}
	if err := setLazyDump(opts, p.Lazy); err != nil {
		return nil, err
	}
	if o.PreDump {
		// A pre-dump copies memory only; mounts and files come with the dump.
		opts.TrackMem = ptr(true)
		return opts, nil
	}

	for _, m := range cfg.Mounts {
		switch m.Device {
		case "bind":
			d := relDest(p.ResolveDest, m.Destination)
			addExtMnt(opts, d, d)
		case "cgroup":
			if !cgroupBindsApply(cfg, p.CgroupV2) {
				continue
			}
			for _, h := range p.CgroupV1Hierarchies {
				d := relDest(p.ResolveDest, path.Join(m.Destination, h))
				addExtMnt(opts, d, d)
			}
		}
	}
	for _, f := range p.MaskedFiles {
		// The name recorded for all of them is /dev/null, which restore
		// maps back to the host's /dev/null.
		addExtMnt(opts, f, "/dev/null")
	}
	for _, d := range cfg.Devices {
		// Device nodes are bind mounts in user-namespaced containers; the
		// other entries are ignored by CRIU.
		addExtMnt(opts, d.Path, d.Path)
	}
	for _, t := range p.FreshTmpfs {
		for _, mp := range t.Mountpoints {
			addExtMnt(opts, mp, t.Key)
		}
	}
	opts.External = append(opts.External, p.ExternalFiles...)
	return opts, nil
}

func (p *Checkpoint) checkExtNS(t configs.NamespaceType) error {
	ok := (t == configs.NEWNET && p.Caps.ExternalNetNS) || (t == configs.NEWPID && p.Caps.ExternalPidNS)
	if !ok {
		return fmt.Errorf("this CRIU cannot treat the %s namespace as external (needs CRIU >= 3.11 for net, 3.15 for pid)", configs.NsName(t))
	}
	return nil
}
