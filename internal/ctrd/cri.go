package ctrd

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// Option changes the daemon Start runs; none gives the default daemon
// (CRI plugin off, a namespace of its own).
type Option func(*settings)

type settings struct {
	cri     bool
	sandbox *Sandbox
	// remote.go's options.
	netns    string // a network namespace file for containerd and its shims
	tcp      *TCP
	noShim   bool
	prepaths []string
	host     string // WithOwnHost's name
	ownHost  *ownHost
}

// WithSandbox runs containerd (and so its shims and their hooks) in the
// sandbox's network and mount namespaces.
func WithSandbox(s *Sandbox) Option {
	return func(set *settings) { set.sandbox = s }
}

// WithCRI turns containerd's CRI plugin on, for tests that talk CRI on the
// daemon's socket (kubelet's view). Runtime handlers: CkptHandler (ckpt's
// shim, passed the pod annotations CheckpointAnnotations) and RuncHandler
// (containerd's runc shim, runc state under Dir); CRIU and restore through
// CreateContainer enabled; no CNI (pods must use the host network); the
// sandbox image is PauseImageName, built locally. The CRI plugin works in
// the fixed namespace CRINamespace, which other daemons may use too: Stop
// removes only what this daemon made.
func WithCRI() Option {
	return func(s *settings) { s.cri = true }
}

const (
	// CRINamespace is the containerd namespace of the CRI plugin.
	CRINamespace = "k8s.io"
	// CkptHandler is the CRI runtime handler of ckpt's shim.
	CkptHandler = "ckpt"
	// RuncHandler is the CRI runtime handler of containerd's runc shim.
	RuncHandler = "runc"
	// PauseImageName is the CRI sandbox image: busybox with a /pause that
	// exits on SIGTERM or SIGINT.
	PauseImageName = "docker.io/ckpt/pause:latest"
)

// CheckpointAnnotations are the pod annotations the CRI plugin passes to
// ckpt's containers (pod_annotations): ckpt's checkpoint options.
const CheckpointAnnotations = "io.ckpt.checkpoint.*"

// pauseScript is the pod sandbox's process. It is pid 1 of the pod's pid
// namespace, where a signal without a handler is ignored: the trap ends
// it on SIGTERM or SIGINT. It waits in the shell's own read of a FIFO it
// holds open for writing too (so no data and no EOF ever come), not in a
// child: like Kubernetes' pause it takes no pid but 1 in a pod that
// shares its pid namespace, where a restored container needs its
// checkpointed pids free.
const pauseScript = "#!/bin/sh\ntrap 'exit 0' TERM INT\nexec 3<>" + pauseFIFO + "\nwhile :; do read -r _ <&3; done\n"

// pauseFIFO is in the image: the sandbox's rootfs is read-only.
const pauseFIFO = "/pause.fifo"

// criConfig is the CRI part of containerd's config (version 3 keys of
// containerd 2.2: the images and runtime plugins, and the gRPC service
// that serves them).
func criConfig(dir string) string {
	q := func(s string) string { return "'" + s + "'" }
	return fmt.Sprintf(`
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = %s

  [plugins.'io.containerd.cri.v1.runtime']
    enable_criu = true
    enable_experimental_restore_via_create = true
    disable_apparmor = true
    # Pods ask for oom_score_adj -998 and lowering it needs
    # CAP_SYS_RESOURCE, which containers (CI runners) often lack.
    restrict_oom_score_adj = true
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = [%s]
      conf_dir = %s
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = %s
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.%s]
        runtime_type = %s
        pod_annotations = [%s]
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.%s]
        runtime_type = 'io.containerd.runc.v2'
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.%s.options]
          Root = %s

  [plugins.'io.containerd.grpc.v1.cri']
    disable_tcp_service = true
    stream_server_address = '127.0.0.1'
    stream_server_port = '0'
`, q(PauseImageName), q(filepath.Join(dir, "cni", "bin")), q(filepath.Join(dir, "cni", "conf")),
		q(CkptHandler), CkptHandler, q(Runtime), q(CheckpointAnnotations), RuncHandler, RuncHandler, q(filepath.Join(dir, "runc-shim")))
}

// disabledWith is the list of disabled plugins without those the CRI
// plugin needs.
func disabledWith(disabled []string, cri bool) []string {
	if !cri {
		return disabled
	}
	var out []string
	for _, p := range disabled {
		if !strings.HasPrefix(p, "io.containerd.grpc.v1.cri") && !strings.HasPrefix(p, "io.containerd.cri.v1.") {
			out = append(out, p)
		}
	}
	return out
}

// importCRIImages imports busybox and the pause image for the CRI plugin,
// each under the names a CRI pull gives an image: the tag, the repo digest
// and the image id. A checkpoint then records its base image by repo
// digest, as on a node that pulled it, and restoring looks it up by that
// name (and would pull it were it missing).
func (d *Daemon) importCRIImages(ctx context.Context, rootfs string) error {
	pause := filepath.Join(d.Dir, "pause-rootfs")
	if err := pauseRootfs(pause, rootfs); err != nil {
		return fmt.Errorf("pause image rootfs: %w", err)
	}
	for _, img := range []struct {
		rootfs, name string
		cmd          []string
	}{
		{rootfs, ImageName, []string{"sh"}},
		{pause, PauseImageName, []string{"/pause"}},
	} {
		var buf bytes.Buffer
		if err := ociArchiveCmd(&buf, img.rootfs, img.name, img.cmd); err != nil {
			return err
		}
		ci, err := d.importForCRI(ctx, &buf, img.name)
		if err != nil {
			return err
		}
		if img.name == ImageName {
			d.Image = ci
		}
	}
	return nil
}

// checkpointAnnotation is the manifest annotation by which the CRI plugin
// knows a checkpoint image (checkpointctl's CheckpointAnnotationName);
// its value is the checkpointed container's name.
const checkpointAnnotation = "org.criu.checkpoint.container.name"

// ImportCheckpointImage imports a CRI checkpoint archive (from
// CheckpointContainer) as an OCI checkpoint image named name, the form
// buildah gives it for a registry: one layer, the archive itself, and the
// checkpoint annotation naming container. A CreateContainer whose image
// is name restores it.
func (d *Daemon) ImportCheckpointImage(ctx context.Context, archive, name, container string) error {
	layer, err := os.ReadFile(archive)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := imageLayout(&buf, layer, name, nil, map[string]string{checkpointAnnotation: container}); err != nil {
		return err
	}
	_, err = d.importForCRI(d.Context(ctx), &buf, name)
	return err
}

// importForCRI imports an OCI layout tar holding the image name, unpacks
// it for the CRI plugin's snapshotter and adds the names a CRI pull
// gives it (the CRI plugin itself adds only the image id).
func (d *Daemon) importForCRI(ctx context.Context, layout io.Reader, name string) (client.Image, error) {
	if _, err := d.Client.Import(ctx, layout); err != nil {
		return nil, fmt.Errorf("import %s: %w", name, err)
	}
	ci, err := d.Client.GetImage(ctx, name)
	if err != nil {
		return nil, err
	}
	if err := ci.Unpack(ctx, "overlayfs"); err != nil {
		return nil, fmt.Errorf("unpack %s: %w", name, err)
	}
	if err := d.addCRIReferences(ctx, ci.Metadata()); err != nil {
		return nil, err
	}
	return ci, nil
}

func (d *Daemon) addCRIReferences(ctx context.Context, img images.Image) error {
	repo := img.Name
	if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
		repo = repo[:i]
	}
	config, err := images.Config(ctx, d.Client.ContentStore(), img.Target, nil)
	if err != nil {
		return fmt.Errorf("config of %s: %w", img.Name, err)
	}
	for _, name := range []string{repo + "@" + img.Target.Digest.String(), config.Digest.String()} {
		ref := images.Image{Name: name, Target: img.Target, Labels: img.Labels}
		if _, err := d.Client.ImageService().Create(ctx, ref); err != nil && !errdefs.IsAlreadyExists(err) {
			return fmt.Errorf("image reference %s: %w", name, err)
		}
	}
	return nil
}

// pauseRootfs makes the pause image's tree: busybox from the busybox
// rootfs, its sh, /pause and its FIFO.
func pauseRootfs(dir, busybox string) error {
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		return err
	}
	for _, d := range []string{"proc", "sys", "dev", "etc", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	data, err := os.ReadFile(filepath.Join(busybox, "bin", "busybox"))
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "busybox"), data, 0o755); err != nil {
		return err
	}
	if err := unix.Mkfifo(filepath.Join(dir, pauseFIFO), 0o600); err != nil && !os.IsExist(err) {
		return err
	}
	for _, applet := range []string{"sh"} {
		if err := os.Symlink("busybox", filepath.Join(dir, "bin", applet)); err != nil && !os.IsExist(err) {
			return err
		}
	}
	return os.WriteFile(filepath.Join(dir, "pause"), []byte(pauseScript), 0o755)
}

// criContainerIDs are the ids of the daemon's containers. ckpt's shim
// keeps runc state under /run/containerd/ckpt/<namespace> whatever the
// CRI runtime options say, and CRINamespace is not this daemon's alone:
// Stop removes those ids from there, not the whole dir.
func (d *Daemon) criContainerIDs(ctx context.Context) []string {
	cs, err := d.Client.Containers(ctx)
	if err != nil {
		return nil
	}
	ids := make([]string, 0, len(cs))
	for _, c := range cs {
		ids = append(ids, c.ID())
	}
	return ids
}
