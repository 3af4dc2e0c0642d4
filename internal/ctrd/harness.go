// Package ctrd runs a private containerd for ckpt's integration tests and
// its benchmark (a plain package, so that bench depends on no test code;
// integration/containerd/harness re-exports it for the tests):
// its own root, state and socket under a temp dir, the CRI plugin off
// (WithCRI turns it on), overlayfs, ckpt's shim built from this tree and
// first on containerd's PATH, and a busybox image built locally (no
// registry). Stop removes everything it made: tasks, containers, shims,
// mounts, dirs.
package ctrd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
)

// ImageName is the busybox image every daemon has.
const ImageName = "docker.io/ckpt/busybox:latest"

// Runtime is ckpt's runtime type.
const Runtime = "io.containerd.ckpt.v2"

// Daemon is a running private containerd.
type Daemon struct {
	Dir       string // everything lives under it
	Address   string // gRPC socket
	Namespace string
	Client    *client.Client
	Image     client.Image
	// RuncRoot is where the shim keeps runc's state for Namespace.
	RuncRoot string
	// CgroupParent is, with WithCRI, the cgroup parent for pod sandboxes
	// (LinuxPodSandboxConfig.CgroupParent); Stop removes it.
	CgroupParent string
	// HostCgroup is, with WithOwnHost, the per-host cgroup, relative to
	// the root of every cgroup hierarchy (the root of the daemon's cgroup
	// namespace): its containers' cgroups are under it.
	HostCgroup string

	cmd  *exec.Cmd
	set  settings
	done chan struct{}
	log  *os.File
	cri  bool
}

// Start builds the shim, starts containerd and imports the busybox image
// made from rootfs (a dir, e.g. from testutil.Rootfs).
func Start(ctx context.Context, rootfs string, opts ...Option) (_ *Daemon, retErr error) {
	var set settings
	for _, o := range opts {
		o(&set)
	}
	dir, err := os.MkdirTemp("", "ckpt-ctrd")
	if err != nil {
		return nil, err
	}
	d := &Daemon{
		Dir: dir, Address: filepath.Join(dir, "containerd.sock"),
		Namespace: fmt.Sprintf("ckpt-it-%d", os.Getpid()), cri: set.cri,
	}
	if d.cri {
		d.Namespace = CRINamespace
		d.CgroupParent = fmt.Sprintf("/ckpt-cri-%d", os.Getpid())
	}
	d.RuncRoot = filepath.Join("/run/containerd/ckpt", d.Namespace)
	defer func() {
		if retErr != nil {
			d.Stop()
		}
	}()
	bin := filepath.Join(dir, "bin")
	if set.noShim {
		err = os.MkdirAll(bin, 0o755)
	} else {
		err = buildShim(ctx, bin)
	}
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfg, []byte(config(dir, d.Address, d.cri, set.tcp)), 0o644); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "xdg"), 0o700); err != nil {
		return nil, err
	}
	if set.host != "" {
		if set.sandbox != nil {
			return nil, errors.New("WithOwnHost and WithSandbox: a daemon runs in one of them")
		}
		if set.ownHost, err = startOwnHost(set.host, set.netns, dir); err != nil {
			return nil, err
		}
		d.HostCgroup = set.ownHost.cgroup
		// The tests look at the runc root from outside the host.
		d.RuncRoot = set.ownHost.path(d.RuncRoot)
	}
	d.set = set
	if err := d.run(); err != nil {
		return nil, err
	}
	if err := d.connect(ctx); err != nil {
		return nil, err
	}
	if d.cri {
		err = d.importCRIImages(d.Context(ctx), rootfs)
	} else {
		err = d.importImage(ctx, rootfs)
	}
	if err != nil {
		return nil, err
	}
	return d, nil
}

// run starts containerd with the config Start wrote, its log appended
// to containerd.log.
func (d *Daemon) run() error {
	var err error
	if d.log, err = os.OpenFile(filepath.Join(d.Dir, "containerd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err != nil {
		return err
	}
	cfg := filepath.Join(d.Dir, "config.toml")
	bin := filepath.Join(d.Dir, "bin")
	if d.cmd, err = d.set.command(cfg, bin); err != nil {
		d.log.Close()
		return err
	}
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	d.cmd.Env = append(d.set.env(bin), "XDG_RUNTIME_DIR="+d.XDGRuntimeDir())
	// containerd must not outlive a killed test binary.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		d.log.Close()
		return fmt.Errorf("start containerd: %w", err)
	}
	done := make(chan struct{})
	d.done = done
	cmd := d.cmd
	go func() {
		cmd.Wait()
		close(done)
	}()
	return nil
}

// XDGRuntimeDir is containerd's XDG_RUNTIME_DIR, where it unpacks a
// checkpoint image for a restore (ctrd-checkpoint*).
func (d *Daemon) XDGRuntimeDir() string { return filepath.Join(d.Dir, "xdg") }

// Pid is containerd's pid.
func (d *Daemon) Pid() int { return d.cmd.Process.Pid }

// Restart stops containerd with sig (SIGTERM as systemd does, SIGKILL as
// a crash), waits for it to exit and starts it again on the same root,
// state and socket; the shims keep running and the new daemon reconnects
// to them. Client and Image are replaced (the old client is closed): a
// container or task got from the old one must be loaded again.
func (d *Daemon) Restart(ctx context.Context, sig syscall.Signal) error {
	if d.Client != nil {
		d.Client.Close()
		d.Client = nil
	}
	d.cmd.Process.Signal(sig)
	select {
	case <-d.done:
	case <-time.After(15 * time.Second):
		d.cmd.Process.Kill()
		<-d.done
	}
	d.log.Close()
	if err := d.run(); err != nil {
		return err
	}
	if err := d.connect(ctx); err != nil {
		return err
	}
	// The image is bound to the client it came from.
	img, err := d.Client.GetImage(d.Context(ctx), ImageName)
	if err != nil {
		return fmt.Errorf("image after the restart: %w", err)
	}
	d.Image = img
	return nil
}

// Context returns ctx in the daemon's namespace.
func (d *Daemon) Context(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, d.Namespace)
}

// Log is containerd's log (shim logs included), for failure reports.
func (d *Daemon) Log() string {
	data, _ := os.ReadFile(filepath.Join(d.Dir, "containerd.log"))
	return string(data)
}

func (d *Daemon) connect(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-d.done:
			return fmt.Errorf("containerd exited at start:\n%s", tail(d.Log(), 40))
		default:
		}
		if _, err := os.Stat(d.Address); err == nil {
			c, err := client.New(d.Address, client.WithDefaultNamespace(d.Namespace), client.WithTimeout(5*time.Second))
			if err == nil {
				if _, err = c.Version(ctx); err == nil {
					d.Client = c
					return nil
				}
				c.Close()
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("containerd at %s: %w\n%s", d.Address, err, tail(d.Log(), 40))
			}
		} else if time.Now().After(deadline) {
			return fmt.Errorf("containerd did not create %s:\n%s", d.Address, tail(d.Log(), 40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (d *Daemon) importImage(ctx context.Context, rootfs string) error {
	ctx = d.Context(ctx)
	var buf bytes.Buffer
	if err := ociArchive(&buf, rootfs, ImageName); err != nil {
		return err
	}
	imgs, err := d.Client.Import(ctx, &buf)
	if err != nil {
		return fmt.Errorf("import busybox image: %w", err)
	}
	if len(imgs) == 0 {
		return errors.New("import busybox image: no image in the archive")
	}
	img, err := d.Client.GetImage(ctx, ImageName)
	if err != nil {
		return err
	}
	if err := img.Unpack(ctx, "overlayfs"); err != nil {
		return fmt.Errorf("unpack busybox image: %w", err)
	}
	d.Image = img
	return nil
}

// Stop removes every task and container of the namespace, stops
// containerd, kills shims that survived, unmounts what is left under Dir
// and removes it. It is safe on a half-started daemon.
func (d *Daemon) Stop() error {
	var errs []error
	var ids []string
	if d.Client != nil {
		ctx, cancel := context.WithTimeout(d.Context(context.Background()), time.Minute)
		if d.cri {
			ids = d.criContainerIDs(ctx)
		}
		errs = append(errs, d.cleanContainers(ctx))
		cancel()
		d.Client.Close()
	}
	if d.cmd != nil && d.cmd.Process != nil {
		d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(15 * time.Second):
			d.cmd.Process.Kill()
			<-d.done
		}
	}
	if d.log != nil {
		d.log.Close()
	}
	killShims(d.Address)
	if h := d.set.ownHost; h != nil {
		// runc's state, the mounts and cgroups are the host's: they go
		// with its namespaces and cgroups.
		errs = append(errs, h.close(), UnmountUnder(d.Dir))
		if err := os.RemoveAll(d.Dir); err != nil {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	}
	if d.cri {
		// CRINamespace's root is shared with other daemons: only ours go,
		// and the dir only if that leaves it empty.
		removeRuncContainerIDs(d.RuncRoot, ids)
		removeRuncContainers(filepath.Join(d.Dir, "runc-shim", d.Namespace))
		removeCgroups(strings.TrimPrefix(d.CgroupParent, "/"))
	} else {
		removeRuncContainers(d.RuncRoot)
		// containerd's runc shim keeps its runc state there.
		runcShimRoot := filepath.Join("/run/containerd/runc", d.Namespace)
		removeRuncContainers(runcShimRoot)
		os.RemoveAll(runcShimRoot)
		removeCgroups(d.Namespace)
	}
	errs = append(errs, UnmountUnder(d.Dir))
	if d.cri {
		syscall.Rmdir(d.RuncRoot)
	} else {
		os.RemoveAll(d.RuncRoot)
	}
	if err := os.RemoveAll(d.Dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// cleanContainers kills and deletes what tests left behind.
func (d *Daemon) cleanContainers(ctx context.Context) error {
	cs, err := d.Client.Containers(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, c := range cs {
		if t, err := c.Task(ctx, nil); err == nil {
			if ch, err := t.Wait(ctx); err == nil {
				if t.Kill(ctx, syscall.SIGKILL, client.WithKillAll) == nil {
					select {
					case <-ch:
					case <-time.After(10 * time.Second):
					}
				}
			}
			if _, err := t.Delete(ctx, client.WithProcessKill); err != nil {
				errs = append(errs, fmt.Errorf("delete task %s: %w", c.ID(), err))
			}
		}
		if err := c.Delete(ctx, client.WithSnapshotCleanup); err != nil {
			errs = append(errs, fmt.Errorf("delete container %s: %w", c.ID(), err))
		}
	}
	return errors.Join(errs...)
}

func config(dir, address string, cri bool, tcp *TCP) string {
	disabled := []string{
		"io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime",
		"io.containerd.nri.v1.nri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
		"io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.blockfile",
		"io.containerd.snapshotter.v1.erofs", "io.containerd.differ.v1.erofs", "io.containerd.mount-handler.v1.erofs",
		"io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing",
	}
	q := func(s string) string { return "'" + s + "'" }
	var ds []string
	for _, p := range disabledWith(disabled, cri) {
		ds = append(ds, q(p))
	}
	var criPart string
	if cri {
		criPart = criConfig(dir)
	}
	return fmt.Sprintf(`version = 3
root = %s
state = %s
disabled_plugins = [%s]

[grpc]
  address = %s
%s
[ttrpc]
  address = %s

[debug]
  level = 'debug'

[plugins]
  [plugins.'io.containerd.internal.v1.opt']
    path = %s
%s`, q(filepath.Join(dir, "root")), q(filepath.Join(dir, "state")), strings.Join(ds, ", "),
		q(address), tcp.config(), q(address+".ttrpc"), q(filepath.Join(dir, "opt")), criPart)
}

func withPath(env []string, dir string) []string {
	out := make([]string, 0, len(env)+1)
	path := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			path = v
			continue
		}
		out = append(out, e)
	}
	return append(out, "PATH="+dir+":"+path)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
