package container

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ckpt-dev/ckpt/runtime/cgroup"
	"github.com/ckpt-dev/ckpt/runtime/criu"
	"github.com/ckpt-dev/ckpt/runtime/image"
	"github.com/ckpt-dev/ckpt/runtime/loopback"
	"github.com/ckpt-dev/ckpt/runtime/plan"
	"github.com/ckpt-dev/ckpt/runtime/proc"
	"github.com/ckpt-dev/ckpt/runtime/runcstate"
	"github.com/ckpt-dev/ckpt/runtime/tmpfs"
	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/log"
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
)

// CheckpointOptions say which container to checkpoint and how.
type CheckpointOptions struct {
	// Root is runc's root dir (runc --root), ID the container.
	Root, ID string
	// ImagePath receives CRIU's images, descriptors.json and ckpt.json.
	ImagePath string
	// WorkPath holds CRIU's log (dump.log); "" puts it in ImagePath.
	WorkPath string
	// ParentPath is a previous pre-dump's image dir, relative to ImagePath
	// as CRIU wants it.
	ParentPath string

	LeaveRunning   bool
	TCPEstablished bool
	ExtUnixSK      bool
	ShellJob       bool
	FileLocks      bool
	// EmptyNetNS dumps the network namespace empty: the caller (Docker,
	// CNI) recreates its network on restore.
	EmptyNetNS bool
	// CgroupsMode is CRIU's manage-cgroups mode: "", soft, full, strict,
	// ignore.
	CgroupsMode string
	// PreDump copies memory only, for a later checkpoint's ParentPath. It
	// needs memory change tracking (soft-dirty), which some kernels lack.
	PreDump bool
	// WindowSize of the container's terminal, recorded for the restore.
	WindowSize *image.WindowSize

	// CriuPath is the criu binary ("" = criu in PATH); Runc the runc
	// binary used to delete the container afterwards ("" = runc).
	CriuPath, Runc string
	// Monitor starts and waits criu and runc (a shim passes its reaper).
	Monitor runc.ProcessMonitor
	// OnStage is called at every CRIU notification, with the init's pid,
	// before the container's action scripts; an error fails the
	// checkpoint (CRIU rolls back).
	OnStage func(ctx context.Context, stage criu.Stage, pid int) error
	// SkipHooks leaves out the container's action scripts (hooks.go).
	SkipHooks bool

	// LazyPages leaves the memory out of the images: once they are
	// written (status-ready) CRIU serves it from a page server at
	// PageServer, the container frozen, until one lazy restore has
	// fetched every page. StartCheckpoint returns at status-ready;
	// Checkpoint returns after the transfer.
	LazyPages bool
	// PageServer is ADDR:PORT for the lazy dump's page server (":PORT":
	// every address); see bindPageServer.
	PageServer string
	// TLS for the page server (CRIU's --tls options).
	TLS TLS
	// TransferTimeout bounds how long a lazy dump keeps the container
	// frozen serving its memory; then criu is killed and the container
	// thawed (0: DefaultTransferTimeout).
	TransferTimeout time.Duration
}

// Checkpoint checkpoints a container runc runs. Without LeaveRunning the
// container's processes are gone afterwards and runc's state is deleted, so
// the id can be reused. A failed checkpoint leaves the container running
// (CRIU rolls back) and no restorable image: CRIU's image files are
// removed, its log is kept.
// A lazy dump returns once the transfer ended (see StartCheckpoint).
func Checkpoint(ctx context.Context, opts CheckpointOptions) (*image.Metadata, error) {
	if !opts.LazyPages {
		return checkpoint(ctx, opts, nil)
	}
	lc, err := StartCheckpoint(ctx, opts)
	if err != nil {
		return nil, err
	}
	md, err := lc.Wait(ctx)
	if ctx.Err() != nil {
		lc.Abort(context.Background())
		<-lc.Done()
	}
	return md, err
}

// checkpoint is Checkpoint; a lazy dump tells ready at status-ready.
func checkpoint(ctx context.Context, opts CheckpointOptions, ready func(image.Metadata)) (_ *image.Metadata, retErr error) {
	start := time.Now()
	st, stateDir, err := runcstate.Load(opts.Root, opts.ID)
	if err != nil {
		return nil, err
	}
	pid := st.InitProcessPid
	if !proc.Alive(pid, st.InitProcessStartTime) {
		return nil, fmt.Errorf("container %q is not running (its init %d is gone)", opts.ID, pid)
	}
	if err := notStarted(opts.ID, stateDir); err != nil {
		return nil, err
	}
	if opts.ImagePath == "" {
		return nil, errors.New("checkpoint: no image path")
	}
	if strays, err := strayProcesses(st); err != nil {
		return nil, err
	} else if len(strays) > 0 {
		return nil, errOutsideTree(opts.ID, strays)
	}
	ctx = log.WithLogger(ctx, log.G(ctx).WithField("container", opts.ID))
	cfg := &st.Config

	imgPath, err := filepath.Abs(opts.ImagePath)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(imgPath, 0o700); err != nil {
		return nil, err
	}
	// A container is checkpointed into the same dir again and again; a
	// stale ckpt.json must not vouch for the new images.
	if err := os.Remove(filepath.Join(imgPath, image.MetadataFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	imgDir, err := os.Open(imgPath)
	if err != nil {
		return nil, err
	}
	defer imgDir.Close()
	complete := false
	defer func() {
		if retErr != nil && !complete {
			removePartialImage(imgPath)
		}
	}()
	// CRIU writes its log and statistics to the work dir, or the image dir
	// when there is none.
	logDir, workFd, statsDir := imgPath, int32(-1), imgDir
	if opts.WorkPath != "" {
		if err := os.MkdirAll(opts.WorkPath, 0o700); err != nil {
			return nil, err
		}
		wd, err := os.Open(opts.WorkPath)
		if err != nil {
			return nil, err
		}
		defer wd.Close()
		logDir, workFd, statsDir = opts.WorkPath, int32(wd.Fd()), wd
	}
	defer func() {
		// Before the partial image goes: a killed criu's yard is mounted
		// there when there is no work dir.
		if retErr != nil {
			if err := unmountCRIUYards(logDir); err != nil {
				log.G(ctx).WithError(err).Warn("the cgroup yard a killed criu left")
			}
		}
	}()
	logName := "dump.log"
	if opts.PreDump {
		logName = "pre-dump.log"
	}

	md := &image.Metadata{
		FormatVersion: image.FormatVersion, ContainerID: opts.ID,
		RuncVersion: runcstate.PinnedVersion(), WindowSize: opts.WindowSize,
	}
	md.Options = plan.Normalize(cfg, image.Options{
		LeaveRunning: opts.LeaveRunning, TCPEstablished: opts.TCPEstablished, ExtUnixSK: opts.ExtUnixSK,
		ShellJob: opts.ShellJob, FileLocks: opts.FileLocks, EmptyNetNS: opts.EmptyNetNS,
		CgroupsMode: opts.CgroupsMode, ParentPath: opts.ParentPath, PreDump: opts.PreDump,
		LazyPages: opts.LazyPages,
	})
	lazy, err := lazyDumpPlan(ctx, opts)
	if err != nil {
		return nil, err
	}
	if !md.Options.EmptyNetNS && !opts.PreDump {
		if ok, why := loopback.Only(cfg, pid); ok {
			md.Options.EmptyNetNS, md.Options.LoopbackOnly = true, true
			// A lazy dump's page server must be reachable from outside:
			// criu stays in ckpt's network namespace.
			md.Options.CRIUInNetNS = !declaresActionScripts(cfg, opts.SkipHooks) && !opts.LazyPages
		} else {
			log.G(ctx).WithField("reason", why).Debug("network namespace dumped with its contents")
		}
	}
	// criu starts up (exec, dynamic linking, ~2 ms) while the rest of the
	// plan is made; it waits for the request.
	criuCfg := criu.Config{Path: opts.CriuPath, LogFile: filepath.Join(logDir, logName), Monitor: opts.Monitor}
	if md.Options.CRIUInNetNS {
		// CRIU dumps the namespace it runs in not at all. A loopback-only
		// one would be recreated empty anyway; dumping it still costs a
		// walk of the host-wide conntrack table, twice, while frozen
		// (~10 ms with the 262144 buckets of a host with 4 GiB or more).
		criuCfg.NetNS = fmt.Sprintf("/proc/%d/ns/net", pid)
	}
	s, err := criu.Start(ctx, criuCfg)
	if err != nil {
		return nil, err
	}
	defer func() { s.Close() }()
	if md.Stdio, err = initStdio(pid); err != nil {
		return nil, fmt.Errorf("inspect the init's stdio: %w", err)
	}
	// A terminal the container owns (process.terminal) comes back through
	// orphan-pts-master and needs a console at restore; a shell job's tty
	// is outside and is CRIU's business.
	if spec, raw, err := runcstate.LoadSpec(runcstate.BundleOf(cfg)); err == nil {
		sum := sha256.Sum256(raw)
		md.SpecDigest = "sha256:" + hex.EncodeToString(sum[:])
		md.Terminal = spec.Process != nil && spec.Process.Terminal
	} else {
		log.G(ctx).WithError(err).Warn("cannot read the bundle's config.json; the checkpoint records no spec digest")
		md.Terminal = !opts.ShellJob && strings.HasPrefix(md.Stdio[0].Link, "/dev/pts/")
	}
	if md.Terminal && md.WindowSize == nil {
		md.WindowSize = ttyWinsize(pid)
	}

	p, err := checkpointPlan(st, md, opts, imgDir, workFd, logName)
	if err != nil {
		return nil, err
	}
	p.Lazy = lazy
	onStage, err := checkpointStages(opts, cfg, imgPath)
	if err != nil {
		return nil, err
	}

	caps, err := s.Capabilities(ctx)
	if err != nil {
		return nil, err
	}
	if opts.PreDump && !caps.PreDump() {
		return nil, fmt.Errorf("pre-dump is not possible here: CRIU %s reports no memory change tracking (soft-dirty) on this kernel; checkpoint without --pre-dump", caps.Version)
	}
	if lazy != nil && !caps.Features.LazyPages {
		return nil, fmt.Errorf("lazy pages are not possible here: CRIU %s reports no userfaultfd (non-cooperative) on this kernel", caps.Version)
	}
	md.CRIUVersion, md.CRIUVersionInt = caps.Version.String(), caps.Version.Int()
	p.Caps = plan.CapsOf(caps)
	copts, err := p.Opts()
	if err == nil && lazy != nil {
		// CRIU reads it when the request comes.
		defer os.Remove(filepath.Join(logDir, lazyConfigFile))
		err = bindPageServer(ctx, copts, lazy, logDir)
	}
	if err != nil {
		return nil, err
	}

	if opts.PreDump {
		err = preDump(ctx, s, caps, copts)
	} else {
		fd := &frozenDump{st: st, md: md, imgDir: imgDir, statsDir: statsDir, onStage: onStage, start: start, ready: ready}
		err = fd.run(ctx, s, copts)
		if errors.Is(err, tmpfs.ErrChanged) {
			log.G(ctx).WithError(err).Info("dumping again, with every tmpfs archived")
			s.Close()
			md.FreshTmpfs, p.FreshTmpfs = nil, nil
			if s, err = criu.Start(ctx, criuCfg); err == nil {
				if copts, err = p.Opts(); err == nil && bindPageServer(ctx, copts, lazy, logDir) == nil {
					err = fd.run(ctx, s, copts)
				}
			}
		}
	}
	if err != nil {
		state := "it is still running"
		if !proc.Alive(pid, st.InitProcessStartTime) {
			state = "it is no longer running"
		}
		return nil, fmt.Errorf("checkpoint of container %q failed (%s): %w", opts.ID, state, err)
	}
	if opts.PreDump {
		md.Timings.TotalMs = time.Since(start).Milliseconds()
		return md, image.WriteMetadata(imgPath, md)
	}
	complete = true
	if !opts.LeaveRunning {
		// The dump is complete and the processes are gone: a caller that
		// gives up now (a signal to the CLI) must not leave runc's state.
		if err := deleteAfterDump(context.WithoutCancel(ctx), opts); err != nil {
			return md, fmt.Errorf("checkpoint of %q is complete, but deleting runc's state failed: %w", opts.ID, err)
		}
	}
	log.G(ctx).WithField("images", imgPath).WithField("ms", md.Timings.TotalMs).Info("checkpoint done")
	return md, nil
}

// notStarted refuses a container runc created but did not start: its init
// is still runc's, waiting on exec.fifo (runc's sign of the "created"
// state), and CRIU would fail on its half-made mounts with an error that
// does not say so.
func notStarted(id, stateDir string) error {
	if _, err := os.Lstat(filepath.Join(stateDir, "exec.fifo")); err != nil {
		return nil
	}
	return fmt.Errorf("container %q has not started (runc state \"created\"): start it before checkpointing it: %w", id, errdefs.ErrFailedPrecondition)
}

// checkpointPlan gathers what the plan needs from the host.
func checkpointPlan(st *libcontainer.State, md *image.Metadata, opts CheckpointOptions, imgDir *os.File, workFd int32, logName string) (*plan.Checkpoint, error) {
	cfg := &st.Config
	pid := st.InitProcessPid
	p := &plan.Checkpoint{
		Config: cfg, InitPid: pid, ImagesDirFd: int32(imgDir.Fd()), WorkDirFd: workFd, LogFile: logName,
		CgroupV2: cgroup.V2(), ResolveDest: resolveIn(cfg.Rootfs), Options: md.Options,
		NsInodes: map[configs.NamespaceType]uint64{},
	}
	p.FreezeCgroup = st.CgroupPaths["freezer"]
	if p.CgroupV2 {
		p.FreezeCgroup = st.CgroupPaths[""]
	}
	for _, ns := range plan.ExternalNamespaces(cfg) {
		ino, err := nsInode(ns.Path)
		if err != nil {
			return nil, err
		}
		p.NsInodes[ns.Type] = ino
	}
	for _, m := range cfg.MaskPaths {
		// runc masks files with a /dev/null bind mount, dirs with a tmpfs.
		fi, err := os.Stat(fmt.Sprintf("/proc/%d/root%s", pid, m))
		if err == nil && !fi.IsDir() {
			p.MaskedFiles = append(p.MaskedFiles, m)
		}
	}
	if cgroup.HasMount(cfg) {
		h, err := cgroup.V1Hierarchies()
		if err != nil {
			return nil, err
		}
		p.CgroupV1Hierarchies = h
	}
	p.CgroupYard, md.CgroupHierarchies = cgroup.Yard()
	if !opts.PreDump {
		ft, err := tmpfs.Recreatable(pid, cfg, p.MaskedFiles, resolveIn(cfg.Rootfs))
		if err != nil {
			return nil, fmt.Errorf("inspect the container's tmpfs mounts: %w", err)
		}
		md.FreshTmpfs, p.FreshTmpfs = ft, ft
	}
	for _, s := range md.Stdio {
		if s.External != "" {
			p.ExternalFiles = append(p.ExternalFiles, s.External)
		}
	}
	if !opts.PreDump {
		links := make([]string, 3)
		for i, s := range md.Stdio {
			links[i] = s.Link
		}
		if err := image.WriteDescriptors(imgDir.Name(), links); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// removePartialImage removes what a failed dump left: CRIU's images and
// ckpt's files. CRIU's log stays for the post-mortem.
func removePartialImage(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		n := e.Name()
		if strings.HasSuffix(n, ".img") || n == image.DescriptorsFile || n == "stats-dump" ||
			strings.HasPrefix(n, "."+image.MetadataFile) || n == image.MetadataFile {
			os.Remove(filepath.Join(dir, n))
		}
	}
}
