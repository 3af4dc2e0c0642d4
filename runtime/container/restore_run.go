package container

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"github.com/ckpt-dev/ckpt/runtime/cgroup"
	"github.com/ckpt-dev/ckpt/runtime/criu"
	"github.com/ckpt-dev/ckpt/runtime/loopback"
	"github.com/ckpt-dev/ckpt/runtime/plan"
	"github.com/ckpt-dev/ckpt/runtime/proc"
	"github.com/ckpt-dev/ckpt/runtime/runcstate"
	"github.com/containerd/log"
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"
)

// run drives CRIU to the end and cleans up: on success the temporary
// mounts, on failure everything.
func (r *Restoring) run(ctx context.Context, cc criu.Config) {
	defer close(r.done)
	defer r.cancel()
	err := r.restore(ctx, cc)
	if err != nil {
		r.err = fmt.Errorf("restore of container %q: %w", r.opts.ID, err)
		log.G(ctx).WithError(err).Warn("restore failed; cleaning up")
	} else {
		log.G(ctx).WithField("pid", r.Pid()).Info("container restored")
	}
	r.cleanup(ctx, err != nil)
	go r.watchLazy(context.WithoutCancel(ctx), err)
}

func (r *Restoring) restore(ctx context.Context, cc criu.Config) error {
	// The cgroup is made while the restore is prepared and criu starts
	// up (cgroup.Setup), or criu joins it: the request needs its paths.
	var roots []*rpc.CgroupRoot
	if r.netns != nil {
		// The image has no network namespace: the restored tasks stay in
		// criu's, a new one with lo up as it was (runtime/loopback).
		var err error
		if cc.NetNS, err = r.netns.Path(ctx); err != nil {
			return err
		}
	}
	cc.OnStart = func(pid int) error {
		r.mu.Lock()
		r.criuPid = pid
		r.mu.Unlock()
		if r.cgSetup != nil {
			return nil
		}
		var err error
		roots, err = cgroup.Join(r.cg, r.cfg, pid)
		return err
	}
	s, err := criu.Start(ctx, cc)
	if err != nil {
		return err
	}
	defer s.Close()
	if err := <-r.runcChecked; err != nil {
		return err
	}
	if r.cgSetup != nil {
		if roots, err = r.cgSetup.Wait(); err != nil {
			return err
		}
	}
	caps, err := s.Capabilities(ctx)
	if err != nil {
		return err
	}
	if r.lazy != nil && !caps.Features.LazyPages {
		return fmt.Errorf("lazy restore is not possible here: CRIU %s reports no userfaultfd (non-cooperative) on this kernel", caps.Version)
	}
	r.planned.Caps = plan.CapsOf(caps)
	copts, err := r.planned.Opts()
	if err != nil {
		return err
	}
	copts.CgRoot = roots
	if r.lazy != nil {
		stop := r.lazy.failFast(r.cancel)
		defer stop()
	}
	pid, err := s.Restore(ctx, copts, r.handler())
	if err != nil {
		if lerr := r.lazy.failed(); lerr != nil {
			return fmt.Errorf("criu lazy-pages failed: %w; the restore: %w", lerr, err)
		}
		return err
	}
	r.setPid(pid)
	r.mu.Lock()
	written := r.written
	r.mu.Unlock()
	if !written {
		return errors.New("CRIU reported success without a post-restore notification; runc's state was not written")
	}
	return nil
}

func (r *Restoring) handler() *criu.Handlers {
	h := r.handlers()
	if r.opts.RootfsLate {
		h.SetupNamespaces = func(ctx context.Context, pid int) error {
			r.announce(ctx, pid)
			return r.hold(ctx)
		}
		h.PostSetupNamespaces = nil
	}
	return h
}

func (r *Restoring) handlers() *criu.Handlers {
	return &criu.Handlers{
		Any: func(ctx context.Context, n *criu.Notification) error {
			if n.Pid != 0 {
				r.setPid(n.Pid)
			}
			if err := r.loopbackReady(ctx, n); err != nil {
				return err
			}
			return r.onStage(ctx, n.Stage)
		},
		SetupNamespaces:     r.announce,
		PostSetupNamespaces: r.hold,
		PostRestore:         r.writeState,
		OrphanPtsMaster:     r.console,
	}
}

// loopbackReady has lo up as it was (see loopback.Only) before any hook
// looks at the network and before any socket is restored: in the
// namespace ckpt made for criu, or in the one CRIU made empty. A tree
// without namespaces of its own has no setup-namespaces; post-restore is
// the latest stage before its sockets could be used.
func (r *Restoring) loopbackReady(ctx context.Context, n *criu.Notification) error {
	switch {
	case r.netns != nil && (n.Stage == criu.SetupNamespaces || n.Stage == criu.PostRestore):
		return r.netns.Wait(ctx)
	case r.netns == nil && n.Stage == criu.SetupNamespaces && r.md.Options.LoopbackOnly:
		return loopback.Up(n.Pid)
	}
	return nil
}

// announce lets StartRestore return at setup-namespaces: the pid is real
// and the namespaces exist, so the caller can wire the network namespace
// (Docker does, between Create and Start).
func (r *Restoring) announce(ctx context.Context, pid int) error {
	r.createdOnce.Do(func() { close(r.created) })
	return nil
}

// hold keeps CRIU at post-setup-namespaces until Finish (nil), Abort, the
// hold timeout or the end of ctx; anything but Finish makes CRIU kill the
// tree. Holding there, not at setup-namespaces, lets CRIU restore the
// mount tree while the caller goes from Create to Start; nothing it does
// before this stage touches the network (the root task alone exists, no
// file or socket is restored), so a caller that wires the network in
// between still has it in place before any socket comes back. A caller
// that writes into the rootfs in between (RootfsLate) has CRIU held at
// setup-namespaces instead: a mountpoint file it replaces while CRIU
// mounts on it would fail the restore.
func (r *Restoring) hold(ctx context.Context) error {
	t := time.NewTimer(r.opts.HoldTimeout)
	defer t.Stop()
	select {
	case err := <-r.release:
		return err
	case <-t.C:
		return fmt.Errorf("held for %s without Finish or Abort", r.opts.HoldTimeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *Restoring) setPid(pid int) {
	r.mu.Lock()
	if pid > 0 {
		r.pid = pid
	}
	r.mu.Unlock()
}

// writeState writes runc's state.json at post-restore, while the tree is
// still stopped, as runc restore does: from here on runc manages the
// container.
func (r *Restoring) writeState(ctx context.Context, pid int) error {
	stat, err := proc.ReadStat(pid)
	if err != nil {
		return fmt.Errorf("restored init %d: %w", pid, err)
	}
	cfg := *r.cfg
	cfg.Namespaces = slices.Clone(r.cfg.Namespaces)
	// CRIU restores into a new time namespace (keeping the tree's clocks
	// monotonic); exec must join it, so runc's config must list it.
	if !cfg.Namespaces.Contains(configs.NEWTIME) && configs.IsNamespaceSupported(configs.NEWTIME) && otherTimeNS(pid) {
		cfg.Namespaces = append(cfg.Namespaces, configs.Namespace{Type: configs.NEWTIME})
	}
	links, err := runcstate.FdLinks(pid)
	if err != nil {
		log.G(ctx).WithError(err).Warn("cannot read the restored init's stdio")
	}
	st := &libcontainer.State{
		BaseState: libcontainer.BaseState{
			ID: r.opts.ID, InitProcessPid: pid, InitProcessStartTime: stat.StartTime,
			Created: time.Now().UTC(), Config: cfg,
		},
		CgroupPaths:         r.cg.GetPaths(),
		NamespacePaths:      runcstate.NamespacePaths(&cfg, pid),
		ExternalDescriptors: links,
	}
	if err := runcstate.Save(r.stateDir, st); err != nil {
		return fmt.Errorf("write runc state: %w", err)
	}
	r.mu.Lock()
	r.initStart = stat.StartTime
	r.mu.Unlock()
	r.mu.Lock()
	r.written = true
	r.mu.Unlock()
	if r.opts.Console != nil {
		if err := r.ptys.handOver(ctx, r.md.WindowSize, r.opts.Console); err != nil {
			return fmt.Errorf("hand over the restored terminal: %w", err)
		}
	}
	return nil
}

func otherTimeNS(pid int) bool {
	a, err1 := nsInode(fmt.Sprintf("/proc/%d/ns/time", pid))
	b, err2 := nsInode("/proc/self/ns/time")
	return err1 == nil && err2 == nil && a != b
}

// console keeps a restored pty master until post-restore (terminal.go).
func (r *Restoring) console(ctx context.Context, master *os.File) error {
	if r.opts.Console == nil {
		master.Close()
		return errors.New("no console to take the restored pty master")
	}
	return r.ptys.add(master)
}

// cleanup undoes what the restore made. After success only the temporary
// criu-root mount goes (the container's mount namespace has its own
// copies); after a failure also the processes, the cgroup and runc's state
// dir, so that the id can be used again.
func (r *Restoring) cleanup(ctx context.Context, failed bool) {
	logger := log.G(ctx)
	if failed {
		if r.lazy != nil {
			r.lazy.kill() // before the cgroup goes: nothing feeds the tree now
		}
		if r.cgSetup != nil {
			r.cgSetup.Wait() // nothing may still be creating it
		}
		// The restored root, once CRIU named it, is the init of the
		// restored pid namespace: killing it kills the namespace, also
		// tasks CRIU has not yet moved into the container's cgroup.
		if pid := r.Pid(); pid > 0 {
			unix.Kill(pid, unix.SIGKILL)
		}
		if err := cgroup.Destroy(r.cg); err != nil {
			logger.WithError(err).Warn("cleanup: container cgroup")
		}
		if pid := r.Pid(); pid > 0 && r.opts.Monitor == nil {
			reap(pid)
		}
	}
	if r.criuRoot != "" {
		if err := unmountCriuRoot(r.criuRoot); err != nil {
			logger.WithError(err).Warn("cleanup: criu-root")
		}
		r.criuRoot = ""
	}
	// The container's mount namespace has its own binds of these.
	for _, d := range r.tmpfsDirs {
		if err := unmountCriuRoot(d); err != nil {
			logger.WithError(err).Warn("cleanup: tmpfs")
		}
	}
	r.tmpfsDirs = nil
	if err := unmountCRIUYards(r.criuWorkDir); err != nil {
		logger.WithError(err).Warn("cleanup: the cgroup yard a killed criu left")
	}
	if r.netns != nil {
		r.netns.Close()
		r.netns = nil
	}
	for _, f := range r.files {
		f.Close()
	}
	r.files = nil
	r.ptys.close()
	if failed && r.stateDir != "" {
		if err := removeUnmounted(r.stateDir); err != nil {
			logger.WithError(err).Warn("cleanup: state dir")
		}
	}
	// The record goes last: until here a crash leaves it to say what to
	// clean. Not recursive: nothing may reach through a mount left.
	if r.workDir != "" {
		os.Remove(filepath.Join(r.workDir, recordFile))
		if err := os.Remove(r.workDir); err != nil && !errors.Is(err, os.ErrNotExist) {
			logger.WithError(err).Warn("cleanup: work dir")
		}
		r.workDir = ""
	}
	if failed {
		r.poststopAfterFailure(ctx)
	}
}

// reap collects a killed restored init: with rst_sibling it is our child,
// and without a reaper in this process nobody else would.
func reap(pid int) {
	deadline := time.Now().Add(2 * time.Second)
	for {
		var ws unix.WaitStatus
		got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		if got == pid || err != nil || time.Now().After(deadline) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}
