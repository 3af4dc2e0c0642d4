package shim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ckpt-dev/ckpt/runtime/cgroupfs"
	"github.com/ckpt-dev/ckpt/runtime/policy"
	"github.com/containerd/cgroups/v3"
	cgroupsv2 "github.com/containerd/cgroups/v3/cgroup2"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	cdshim "github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/containerd/v2/pkg/shutdown"
	"github.com/containerd/containerd/v2/plugins"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/log"
	"github.com/containerd/plugin"
	"github.com/containerd/plugin/registry"
	"golang.org/x/sys/unix"
)

// RuntimeName is ckpt's containerd runtime type.
const RuntimeName = "io.containerd.ckpt.v2"

// RegisterPlugin registers the task service as the shim's TTRPC plugin,
// the way containerd's runtime v2 example does; engine may be nil.
func RegisterPlugin(engine Engine) {
	registry.Register(&plugin.Registration{
		Type:     plugins.TTRPCPlugin,
		ID:       "task",
		Requires: []plugin.Type{plugins.EventPlugin, plugins.InternalPlugin},
		InitFn: func(ic *plugin.InitContext) (any, error) {
			pp, err := ic.GetByID(plugins.EventPlugin, "publisher")
			if err != nil {
				return nil, err
			}
			ss, err := ic.GetByID(plugins.InternalPlugin, "shutdown")
			if err != nil {
				return nil, err
			}
			if err := leaveBundle(); err != nil {
				return nil, err
			}
			return NewTaskService(ic.Context, pp.(cdshim.Publisher), ss.(shutdown.Service), engine)
		},
	})
}

// leaveBundle moves the serving shim out of the bundle it was started in
// (pkg/shim has opened the log FIFO there by now). A pod's shim outlives
// the bundle of the container that started it, which containerd removes
// with that container, and a process whose cwd is gone cannot getwd(2):
// runc's spec conversion, which a restore runs in the shim, fails on it.
// Nothing in the shim uses its cwd: every path is the bundle's, and hooks
// and runc run in their container's bundle.
func leaveBundle() error {
	if err := os.Chdir("/"); err != nil {
		return fmt.Errorf("leave the bundle dir: %w", err)
	}
	return nil
}

// NewManager is the shim.Manager of containerd's (<= 2.2) bootstrap: the
// "start" action spawns the long-lived shim and prints its address as
// JSON, which containerd 2.3+ daemons still accept.
func NewManager(name string, engine Engine) cdshim.Manager {
	return manager{name: name, engine: engine}
}

type manager struct {
	name string
	// engine removes a dead shim's restore leftovers in Stop; may be nil.
	engine Engine
}

func (m manager) Name() string { return m.name }

// SandboxIDAnnotation is set by containerd's CRI plugin on every
// container of a pod, the sandbox (pause) container included, to the
// pod's id: the containers of one pod share a shim.
const SandboxIDAnnotation = "io.kubernetes.cri.sandbox-id"

// GroupAnnotation names a group of containers that share one shim
// outside a pod: the annotation containerd's runc shim reads, so that a
// container keeps its grouping when it moves from runc's runtime to ckpt's.
const GroupAnnotation = "io.containerd.runc.v2.group"

// shimGroup is the id of the shim that serves container id of bundle: its
// group's (GroupAnnotation, then its pod's id), or its own. The pause
// container's id is the pod's, so the first container of a pod starts the
// shim and names it.
func shimGroup(id, bundle string) (string, error) {
	annotations, err := policy.ReadAnnotations(bundle)
	if err != nil {
		return "", fmt.Errorf("shim group of %q: %w", id, err)
	}
	for _, key := range []string{GroupAnnotation, SandboxIDAnnotation} {
		if g := annotations[key]; g != "" {
			return g, nil
		}
	}
	return id, nil
}

// Start runs in containerd's "start" call, in the bundle dir: it spawns
// the serving shim with the listening socket as fd 3, or, for a
// container of a pod whose shim runs, gives containerd that shim's
// address. The socket's address derives from the group, so the shim of a
// pod is found without any state of ckpt's own, and containerd keeps the
// address with each container (bootstrap.json in its bundle).
func (m manager) Start(ctx context.Context, id string, opts cdshim.StartOpts) (_ cdshim.BootstrapParams, retErr error) {
	params := cdshim.BootstrapParams{Version: 3, Protocol: "ttrpc"}
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return params, err
	}
	self, err := os.Executable()
	if err != nil {
		return params, err
	}
	cwd, err := os.Getwd()
	if err != nil {
		return params, err
	}
	group, err := shimGroup(id, cwd)
	if err != nil {
		return params, err
	}
	address, err := cdshim.SocketAddress(ctx, opts.Address, group, false)
	if err != nil {
		return params, err
	}
	params.Address = address
	l, err := cdshim.NewSocket(address)
	if err != nil {
		if !cdshim.SocketEaddrinuse(err) {
			return params, fmt.Errorf("shim socket: %w", err)
		}
		if cdshim.CanConnect(address) {
			// The pod's shim (or this container's, started before)
			// runs: it serves this container too.
			log.G(ctx).WithFields(log.Fields{"id": id, "group": group}).Debug("joining the running shim")
			return params, nil
		}
		if err := cdshim.RemoveSocket(address); err != nil {
			return params, fmt.Errorf("remove stale shim socket: %w", err)
		}
		if l, err = cdshim.NewSocket(address); err != nil {
			return params, fmt.Errorf("shim socket: %w", err)
		}
	}
	defer func() {
		if retErr != nil {
			cdshim.RemoveSocket(address)
		}
	}()
	// The socket must outlive this process: closing our copies must not
	// unlink it.
	l.SetUnlinkOnClose(false)
	defer l.Close()
	f, err := l.File()
	if err != nil {
		return params, err
	}
	defer f.Close()

	// containerd hands the runtime options to "start" on stdin.
	var shimCgroup string
	stdin, err := io.ReadAll(os.Stdin)
	if err != nil {
		return params, fmt.Errorf("read start's stdin: %w", err)
	}
	// Unreadable options were ignored before containerd 2.4 too: the
	// shim then stays where it was started.
	if ropts, err := startRuntimeOptions(stdin); err == nil && ropts != nil {
		shimCgroup = ropts.ShimCgroup
	}

	// The shim is named by its group: pkg/shim removes the socket of its
	// -id when it exits, and that socket is the group's.
	args := []string{"-namespace", ns, "-id", group, "-address", opts.Address}
	if opts.Debug {
		args = append(args, "-debug")
	}
	cmd := exec.Command(self, args...)
	cmd.Dir = cwd
	cmd.Env = append(withoutEnv(os.Environ(), warmEnv), "GOMAXPROCS=4")
	if shimCgroup == "" {
		// Nothing moves the shim after this: it may take the cgroup
		// migration lock itself (WarmCgroupLock). Moving it into the
		// shim cgroup below takes the lock anyway.
		cmd.Env = append(cmd.Env, warmEnv+"=1")
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.ExtraFiles = []*os.File{f}
	if err := cmd.Start(); err != nil {
		return params, err
	}
	defer func() {
		if retErr != nil {
			cmd.Process.Kill()
		}
	}()
	go cmd.Wait()
	if shimCgroup != "" {
		if err := joinCgroup(shimCgroup, cmd.Process.Pid); err != nil {
			return params, err
		}
	}
	if err := cdshim.AdjustOOMScore(cmd.Process.Pid); err != nil {
		return params, fmt.Errorf("adjust the shim's OOM score: %w", err)
	}
	return params, nil
}

// warmEnv is set, to 1, in the environment of a serving shim that start
// leaves in the cgroups it inherited.
const warmEnv = "CKPT_SHIM_WARM_CGROUP_LOCK"

// WarmCgroupLock starts paying the cgroup migration lock's grace period
// (runtime/cgroupfs) in a serving shim, as early as the shim can: ~5 ms
// before containerd's Create arrives, and so before the container's first
// cgroup move (CRIU's of a restored task, runc's of a new init), which the
// container waits for. The shim moves itself into the cgroup it is in;
// start asks for it only where it does not move the shim itself (a shim
// cgroup in the runtime options), since two moves would race. The
// variable is dropped so that runc and criu do not inherit it.
func WarmCgroupLock() {
	if os.Getenv(warmEnv) != "1" {
		return
	}
	os.Unsetenv(warmEnv)
	go cgroupfs.WarmMigration()
}

// withoutEnv is a copy of env without name's entries.
func withoutEnv(env []string, name string) []string {
	return slices.DeleteFunc(slices.Clone(env), func(kv string) bool { return strings.HasPrefix(kv, name+"=") })
}

func joinCgroup(path string, pid int) error {
	if cgroups.Mode() == cgroups.Unified {
		cg, err := cgroupsv2.Load(path)
		if err != nil {
			return fmt.Errorf("shim cgroup %s: %w", path, err)
		}
		return cg.AddProc(uint64(pid))
	}
	// cgroup v1: join the group in every hierarchy that has it.
	dirs, err := filepath.Glob("/sys/fs/cgroup/*/cgroup.procs")
	if err != nil {
		return err
	}
	joined := false
	for _, procs := range dirs {
		f := filepath.Join(filepath.Dir(procs), path, "cgroup.procs")
		if err := os.WriteFile(f, []byte(strconv.Itoa(pid)), 0); err == nil {
			joined = true
		}
	}
	if !joined {
		return fmt.Errorf("shim cgroup %s: no hierarchy has it", path)
	}
	return nil
}

// Stop is containerd's "delete" action, run after a shim died: it removes
// what the shim would have (runc's container, the rootfs mount).
func (m manager) Stop(ctx context.Context, id string) (cdshim.StopStatus, error) {
	cwd, err := os.Getwd()
	if err != nil {
		return cdshim.StopStatus{}, err
	}
	bundle := filepath.Join(filepath.Dir(cwd), id)
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return cdshim.StopStatus{}, err
	}
	rc, err := readRuntimeConfig(bundle)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			return cdshim.StopStatus{}, err
		}
		rc = runtimeConfigOf(ns, &options.Options{})
	}
	// A shim killed in a restore leaves criu's tasks, mounts and cgroups
	// that runc knows nothing of: the engine recorded them.
	if m.engine != nil {
		if err := m.engine.RemoveLeftover(ctx, rc.Root, id); err != nil {
			log.G(ctx).WithError(err).Warn("remove what the dead shim's restore left")
		}
	}
	if err := deleteContainer(ctx, rc.newRunc(bundle), id, true); err != nil {
		log.G(ctx).WithError(err).Warn("delete the runc container")
	}
	cleanupDeadRestore(ctx, bundle)
	if err := mount.UnmountRecursive(filepath.Join(bundle, "rootfs"), 0); err != nil {
		log.G(ctx).WithError(err).Warn("unmount rootfs")
	}
	pid, err := runc.ReadPidFile(filepath.Join(bundle, "init.pid"))
	if err != nil {
		log.G(ctx).WithError(err).Debug("no init pid file")
	}
	return cdshim.StopStatus{Pid: pid, ExitStatus: 128 + int(unix.SIGKILL), ExitedAt: time.Now()}, nil
}

// Info answers `shim -info`.
func (m manager) Info(ctx context.Context, _ io.Reader) (*types.RuntimeInfo, error) {
	version, revision := "unknown", ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		version = bi.Main.Version
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				revision = s.Value
			}
		}
	}
	return &types.RuntimeInfo{Name: m.name, Version: &types.RuntimeVersion{Version: version, Revision: revision}}, nil
}
