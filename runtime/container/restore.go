package container

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/ckpt-dev/ckpt/hooks"
	"github.com/ckpt-dev/ckpt/runtime/cgroup"
	"github.com/ckpt-dev/ckpt/runtime/criu"
	"github.com/ckpt-dev/ckpt/runtime/image"
	"github.com/ckpt-dev/ckpt/runtime/loopback"
	"github.com/ckpt-dev/ckpt/runtime/plan"
	"github.com/ckpt-dev/ckpt/runtime/runcstate"
	"github.com/ckpt-dev/ckpt/runtime/tmpfs"
	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/log"
	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/runc/libcontainer/configs"
)

// DefaultHoldTimeout bounds how long CRIU is held waiting for Finish or
// Abort; then the restore is aborted.
const DefaultHoldTimeout = 2 * time.Minute

// ErrAborted is the reason CRIU is given when Abort is called.
var ErrAborted = errors.New("restore aborted")

// RestoreOptions say what to restore where.
type RestoreOptions struct {
	// Root is runc's root dir; ID the new container's id (it may differ
	// from the checkpointed one).
	Root, ID string
	// Bundle holds config.json, as for runc create.
	Bundle string
	// ImagePath is the checkpoint (with ckpt.json).
	ImagePath string
	// WorkPath holds CRIU's restore.log; "" puts it in ImagePath.
	WorkPath string
	// Stdio become criu's fds 0-2 and, through inherit_fd, the restored
	// init's stdio where it was a pipe or a file outside the container.
	// A nil entry is /dev/null.
	Stdio [3]*os.File
	// Console receives each pty master CRIU restored, and owns it; init
	// says whether it is the restored init's terminal (the others belong
	// to sessions the caller did not start, e.g. an exec's). It is called
	// at post-restore, after the recorded window size is set. It is
	// required when the checkpoint has a terminal.
	Console func(master *os.File, init bool) error
	// EmptyNetNS restores the network namespace empty, for a caller that
	// sets up the network itself (also when the checkpoint did not ask).
	EmptyNetNS bool
	// CriuPath is the criu binary ("" = criu in PATH); Runc the runc
	// whose version is checked ("" = runc in PATH).
	CriuPath, Runc string
	// Monitor starts and waits criu (a shim passes its reaper). Without
	// one, ckpt also reaps a restored init that dies in a failed restore.
	Monitor runc.ProcessMonitor
	// OnStage is called at every CRIU notification with the restored
	// root's pid (0 until CRIU has told it), before ckpt's hooks. An
	// error aborts the restore, except at pre-resume and post-resume.
	OnStage func(ctx context.Context, stage criu.Stage, pid int) error
	// SkipHooks leaves out the OCI hooks and action scripts of the
	// bundle's spec (see runtime/container/hooks.go), for a caller that
	// runs them itself.
	SkipHooks bool
	// HoldTimeout bounds the hold before Finish (0: the default).
	HoldTimeout time.Duration
	// RootfsLate says the caller still writes into the rootfs between
	// StartRestore and Finish (the CRI plugin unpacks the checkpoint's
	// rootfs-diff.tar there, replacing mountpoint files). CRIU is then held
	// at setup-namespaces, before it restores the mount tree, rather than
	// at post-setup-namespaces.
	RootfsLate bool

	// LazyPages restores without reading the memory: `criu lazy-pages`
	// fills it in on demand and in the background, from the images, or
	// from the source's page server at PageServer (ADDR:PORT, with TLS)
	// for a checkpoint dumped with lazy pages. PagesIn tells when every
	// page is in.
	LazyPages  bool
	PageServer string
	TLS        TLS
	// TransferTimeout bounds the lazy transfer after the restore; then the
	// daemon and the container are killed (0: DefaultTransferTimeout).
	TransferTimeout time.Duration
}

// Restoring is a restore that StartRestore returned at setup-namespaces:
// the restored root task and its namespaces exist (Pid is real). CRIU
// goes on restoring the mount tree and is held at post-setup-namespaces,
// before any other task, file or socket is restored (see hold), or, with
// RootfsLate, is held at setup-namespaces already.
type Restoring struct {
	opts     RestoreOptions
	stateDir string
	// workDir holds the restore's record, criu-root and tmpfs mounts
	// (leftover.go).
	workDir  string
	cfg      *configs.Config
	md       *image.Metadata
	netns    *loopback.NetNS // the namespace to restore into, where criu ran in the dumped one
	cg       cgroups.Manager
	cgSetup  *cgroup.Setup // where criu does not join the cgroup
	criuRoot string
	// criuWorkDir is CRIU's work dir (its log's), where a killed criu
	// leaves its cgroup yard mounted.
	criuWorkDir string
	// tmpfsDirs hold the new tmpfs mounts of the image's empty ones.
	tmpfsDirs []string
	files     []*os.File
	planned   *plan.Restore
	ptys      *restoredPtys // pty masters CRIU sent, until post-restore
	cancel    context.CancelFunc
	hooks     *hooks.Lifecycle
	// runcChecked delivers the result of the runc version check.
	runcChecked chan error

	mu      sync.Mutex
	pid     int
	criuPid int
	written bool // runc's state.json exists

	// lazy is the lazy-pages daemon of a lazy restore; pagesIn is closed
	// when it has ended (lazyErr: how).
	lazy    *lazyDaemon
	pagesIn chan struct{}
	lazyErr error
	// initStart is the restored init's start time: a pid is only killed
	// while it is still that process.
	initStart uint64

	// created is closed once Pid is real (setup-namespaces).
	created     chan struct{}
	createdOnce sync.Once
	release     chan error
	releaseOnce sync.Once
	done        chan struct{}
	err         error
}

// Restore restores in one go: StartRestore, then Finish.
func Restore(ctx context.Context, opts RestoreOptions) (int, error) {
	r, err := StartRestore(ctx, opts)
	if err != nil {
		return 0, err
	}
	if err := r.Finish(ctx); err != nil {
		return 0, err
	}
	return r.Pid(), nil
}

// StartRestore prepares the container (state dir, cgroup, rootfs
// mountpoints) and starts CRIU, which it holds at post-setup-namespaces (at
// setup-namespaces with RootfsLate). It returns at setup-namespaces, when
// the restored root's pid is known, or with CRIU's error; a failed
// start leaves nothing behind. A container whose tree has no namespaces of
// its own is restored completely here (CRIU sends no setup-namespaces).
func StartRestore(ctx context.Context, opts RestoreOptions) (*Restoring, error) {
	if opts.Root == "" || opts.Bundle == "" || opts.ImagePath == "" {
		return nil, errors.New("restore: runc root, bundle and image path are required")
	}
	stateDir, err := runcstate.Dir(opts.Root, opts.ID)
	if err != nil {
		return nil, err
	}
	if opts.HoldTimeout <= 0 {
		opts.HoldTimeout = DefaultHoldTimeout
	}
	ctx = log.WithLogger(ctx, log.G(ctx).WithField("container", opts.ID))
	r := &Restoring{
		opts: opts, stateDir: stateDir, created: make(chan struct{}),
		release: make(chan error, 1), done: make(chan struct{}),
		runcChecked: make(chan error, 1), pagesIn: make(chan struct{}),
	}
	// `runc --version` is an exec (~5 ms): it runs while the restore is
	// prepared and CRIU starts, and CRIU is asked to restore only once it
	// passed.
	go func() { r.runcChecked <- runcstate.CheckVersion(ctx, opts.Runc) }()
	cc, err := r.prepare(ctx)
	if err != nil {
		r.cleanup(ctx, true)
		return nil, fmt.Errorf("restore of container %q: %w", opts.ID, err)
	}
	// The restore outlives StartRestore's ctx (a shim's Create request):
	// it ends with Finish, Abort or the hold timeout.
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r.cancel = cancel
	go r.run(sctx, cc)

	select {
	case <-r.created:
		return r, nil
	case <-r.done:
		if r.err != nil {
			return nil, r.err
		}
		return r, nil
	case <-ctx.Done():
		// Not Abort: its answer reaches CRIU only at the hold, and CRIU
		// may never get there. criu and its tree are killed now.
		r.cancel()
		<-r.done
		return nil, fmt.Errorf("restore of %q: %w", opts.ID, ctx.Err())
	}
}

// Pid is the restored init's host pid.
func (r *Restoring) Pid() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pid
}

// Done is closed when CRIU has finished, successfully or not (for
// instance when the hold timed out).
func (r *Restoring) Done() <-chan struct{} { return r.done }

// Finish releases CRIU and waits for the end of the restore. On success
// runc's state.json is written and the container runs; on failure nothing
// is left. When ctx ends first, CRIU is killed and the restore undone.
func (r *Restoring) Finish(ctx context.Context) error {
	r.releaseWith(nil)
	select {
	case <-r.done:
	case <-ctx.Done():
		r.cancel()
		<-r.done
	}
	return r.err
}

// Abort answers CRIU false (CRIU kills the restored tree), waits for it
// and removes everything the restore made. It fails if the restore already
// completed: the container then runs and is runc's to kill.
func (r *Restoring) Abort(ctx context.Context) error {
	r.releaseWith(ErrAborted)
	select {
	case <-r.done:
	case <-ctx.Done():
		r.cancel()
		<-r.done
	}
	if r.err == nil {
		return fmt.Errorf("restore of %q already completed: the container runs (kill and delete it with runc)", r.opts.ID)
	}
	return nil
}

func (r *Restoring) releaseWith(err error) {
	r.releaseOnce.Do(func() { r.release <- err })
}

// prepare does everything before criu runs and returns criu's start
// config. What it creates is recorded in r for cleanup.
func (r *Restoring) prepare(ctx context.Context) (criu.Config, error) {
	opts := r.opts
	var cc criu.Config
	imgPath, err := filepath.Abs(opts.ImagePath)
	if err != nil {
		return cc, err
	}
	imgDir, err := os.Open(imgPath)
	if err != nil {
		return cc, fmt.Errorf("image dir: %w", err)
	}
	r.files = append(r.files, imgDir)
	if fi, err := imgDir.Stat(); err != nil || !fi.IsDir() {
		return cc, fmt.Errorf("image dir %s is not a directory", imgPath)
	}
	md, err := image.ReadMetadata(imgDir)
	if err != nil {
		return cc, err
	}
	r.md = md
	// A pages image shorter than its pagemap makes CRIU loop forever.
	if err := image.CheckPages(imgDir); err != nil {
		return cc, err
	}
	if md.Options.CRIUInNetNS {
		r.netns = loopback.NewNetNS()
	}
	desc, err := image.ReadDescriptors(imgDir)
	if err != nil {
		return cc, err
	}
	r.ptys = newRestoredPtys(desc)
	if md.Terminal && opts.Console == nil {
		return cc, errors.New("the checkpoint has a terminal: restoring it needs a console to take the pty master (console socket)")
	}
	spec, raw, err := runcstate.LoadSpec(opts.Bundle)
	if err != nil {
		return cc, err
	}
	if sum := sha256.Sum256(raw); md.SpecDigest != "" && md.SpecDigest != "sha256:"+hex.EncodeToString(sum[:]) {
		log.G(ctx).Info("config.json differs from the checkpointed container's")
	}
	cfg, err := runcstate.Config(opts.Bundle, spec, opts.ID)
	if err != nil {
		return cc, err
	}
	r.cfg = cfg
	if r.hooks, err = newRestoreHooks(opts, spec, cfg, imgPath); err != nil {
		return cc, err
	}

	// The work dir holds the restore's record and mounts (leftover.go);
	// what a restore whose ckpt died left under the id goes first.
	if r.workDir, err = WorkDir(opts.Root, opts.ID); err != nil {
		return cc, err
	}
	if left, err := Leftover(opts.Root, opts.ID); err != nil {
		r.workDir = "" // not ours
		return cc, err
	} else if left {
		log.G(ctx).Warn("the id holds what an earlier restore left when its ckpt process died; removing it")
		if err := RemoveLeftover(ctx, opts.Root, opts.ID); err != nil {
			r.workDir = ""
			return cc, err
		}
	}
	if err := os.MkdirAll(workRoot, 0o700); err != nil {
		r.workDir = ""
		return cc, err
	}
	if err := os.Mkdir(r.workDir, 0o700); err != nil {
		r.workDir = ""
		if errors.Is(err, os.ErrExist) {
			return cc, fmt.Errorf("container %q: %w: %w", opts.ID, ErrRestoreInProgress, errdefs.ErrFailedPrecondition)
		}
		return cc, err
	}
	logDir := imgPath
	if opts.WorkPath != "" {
		if logDir, err = filepath.Abs(opts.WorkPath); err != nil {
			return cc, err
		}
	}
	r.criuWorkDir = logDir
	rec := &restoreRecord{Root: opts.Root, ID: opts.ID, LogFile: filepath.Join(logDir, "restore.log")}
	if err := writeRecord(r.workDir, rec); err != nil {
		return cc, fmt.Errorf("record the restore in %s: %w", r.workDir, err)
	}

	// The state dir claims the id, as runc's create does.
	if err := os.MkdirAll(opts.Root, 0o700); err != nil {
		return cc, err
	}
	if err := os.Mkdir(r.stateDir, 0o711); err != nil {
		r.stateDir = "" // not ours to remove
		if errors.Is(err, os.ErrExist) {
			return cc, fmt.Errorf("container %q already exists under %s", opts.ID, opts.Root)
		}
		return cc, err
	}
	if r.cg, err = cgroup.New(cfg); err != nil {
		return cc, err
	}
	// Recorded before either is made.
	rec.StateDir, rec.Cgroups = r.stateDir, r.cg.GetPaths()
	if err := writeRecord(r.workDir, rec); err != nil {
		return cc, fmt.Errorf("record the restore in %s: %w", r.workDir, err)
	}
	if !cgroup.CRIUJoins(cfg, md.Options.CgroupsMode) {
		r.cgSetup = cgroup.StartSetup(r.cg, cfg)
	}
	r.criuRoot = filepath.Join(r.workDir, "criu-root")
	if err := mountCriuRoot(cfg.Rootfs, r.criuRoot); err != nil {
		r.criuRoot = ""
		return cc, err
	}
	if err := prepareMountpoints(r.criuRoot, cfg.Mounts); err != nil {
		return cc, err
	}
	if cfg.Readonlyfs {
		if err := readonlyCriuRoot(r.criuRoot); err != nil {
			return cc, err
		}
	}

	freshTmpfs, err := r.mountFreshTmpfs()
	if err != nil {
		return cc, err
	}

	p := &plan.Restore{
		Config: cfg, Root: r.criuRoot, ImagesDirFd: int32(imgDir.Fd()), WorkDirFd: -1,
		Options: md.Options, Descriptors: desc, Stdio: md.Stdio, CgroupV2: cgroup.V2(),
		NsFds: map[configs.NamespaceType]int32{}, ResolveDest: resolveIn(cfg.Rootfs),
		CgroupYard: cgroup.RestoreYard(md.CgroupHierarchies), FreshTmpfs: freshTmpfs,
	}
	p.Options.EmptyNetNS = p.Options.EmptyNetNS || opts.EmptyNetNS
	if opts.WorkPath != "" {
		if err := os.MkdirAll(opts.WorkPath, 0o700); err != nil {
			return cc, err
		}
		wd, err := os.Open(opts.WorkPath)
		if err != nil {
			return cc, err
		}
		r.files = append(r.files, wd)
		p.WorkDirFd = int32(wd.Fd())
	}
	if err := r.prepareLazy(ctx, p, imgPath, logDir); err != nil {
		return cc, err
	}
	for _, ns := range plan.ExternalNamespaces(cfg) {
		f, err := os.Open(ns.Path)
		if err != nil {
			return cc, fmt.Errorf("the %s namespace to restore into: %w", configs.NsName(ns.Type), err)
		}
		r.files = append(r.files, f)
		p.NsFds[ns.Type] = criu.InheritFD(len(cc.ExtraFiles))
		cc.ExtraFiles = append(cc.ExtraFiles, f)
	}
	if p.CgroupBinds, err = cgroup.Binds(cfg, r.cg); err != nil {
		return cc, err
	}

	stdio, err := r.stdio()
	if err != nil {
		return cc, err
	}
	cc.Path, cc.Monitor = opts.CriuPath, opts.Monitor
	cc.Stdin, cc.Stdout, cc.Stderr = stdio[0], stdio[1], stdio[2]
	cc.LogFile = filepath.Join(logDir, "restore.log")

	// The plan needs criu's capabilities, which need criu: the options are
	// completed in run. Check what can be checked without it now.
	p.Caps = plan.Caps{OrphanPtsMaster: true, ExternalNetNS: true, ExternalPidNS: true, CgroupV2Freezer: true}
	if _, err := p.Opts(); err != nil {
		return cc, err
	}
	r.planned = p
	return cc, nil
}

// mountFreshTmpfs mounts a new empty tmpfs for each one the checkpoint
// left out, in the state dir, for CRIU to bind in place.
func (r *Restoring) mountFreshTmpfs() ([]plan.Bind, error) {
	var binds []plan.Bind
	for i, t := range r.md.FreshTmpfs {
		dir := filepath.Join(r.workDir, fmt.Sprintf("tmpfs-%d", i))
		if err := tmpfs.Mount(dir, t); err != nil {
			return nil, err
		}
		r.tmpfsDirs = append(r.tmpfsDirs, dir)
		binds = append(binds, plan.Bind{Dest: t.Key, Source: dir})
	}
	return binds, nil
}

// stdio returns criu's fds 0-2: the caller's files or /dev/null. They are
// *os.File so that exec hands criu the descriptors themselves.
func (r *Restoring) stdio() ([3]*os.File, error) {
	var out [3]*os.File
	for i, f := range r.opts.Stdio {
		if f != nil {
			out[i] = f
			continue
		}
		n, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
		if err != nil {
			return out, err
		}
		r.files = append(r.files, n)
		out[i] = n
	}
	return out, nil
}
