package migrate

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	"github.com/sirupsen/logrus"
)

// preflight connects to the target and checks, before the source is
// touched, everything that can be known in advance: it answers (over TLS
// where TCP), runs a containerd ckpt supports, has ckpt's runtime and the
// container's snapshotter, holds no container of that id, and has the
// container's image as on the source or none of that name (then it is
// copied along).
func (m *move) preflight(ctx context.Context) error {
	dst, err := Dial(m.cfg.Target, m.cfg.Namespace, m.cfg.Timeout)
	if err != nil {
		return fmt.Errorf("target containerd: %w", err)
	}
	m.dst = dst
	if err := m.checkTarget(ctx); err != nil {
		dst.Close()
		return fmt.Errorf("preflight (the source was not touched): %w", err)
	}
	return nil
}

func (m *move) checkTarget(ctx context.Context) error {
	pctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
	defer cancel()
	v, err := m.dst.Version(pctx)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted: %w", ctx.Err())
		}
		return reachError("target", m.cfg.Target.Address, err)
	}
	if err := supportedVersion(v.Version); err != nil {
		return fmt.Errorf("target: %w", err)
	}
	log := m.log.WithFields(logrus.Fields{"target": m.cfg.Target.Address, "target_version": v.Version})
	if _, err := m.dst.RuntimeInfo(pctx, Runtime, nil); err != nil {
		return fmt.Errorf("target containerd cannot run %s (is containerd-shim-ckpt-v2 in its PATH?): %v: %w", Runtime, err, errdefs.ErrFailedPrecondition)
	}
	ps, err := m.dst.IntrospectionService().Plugins(pctx, "type==io.containerd.snapshotter.v1,id=="+m.info.Snapshotter)
	if err != nil {
		return fmt.Errorf("target plugins: %w", err)
	}
	if len(ps.Plugins) == 0 || ps.Plugins[0].InitErr != nil {
		return fmt.Errorf("target has no working snapshotter %q (the container's): %w", m.info.Snapshotter, errdefs.ErrFailedPrecondition)
	}
	if _, err := m.dst.ContainerService().Get(pctx, m.cfg.ID); err == nil {
		return fmt.Errorf("target already has a container %s in namespace %s: %w", m.cfg.ID, m.cfg.Namespace, errdefs.ErrAlreadyExists)
	} else if !errdefs.IsNotFound(err) {
		return fmt.Errorf("target containers: %w", err)
	}
	img, err := m.dst.ImageService().Get(pctx, m.image.Name)
	switch {
	case errdefs.IsNotFound(err):
		log.WithField("image", m.image.Name).Info("the target lacks the image: it is copied along")
	case err != nil:
		return fmt.Errorf("target image %s: %w", m.image.Name, err)
	case img.Target.Digest != m.image.Target.Digest:
		return fmt.Errorf("target's image %s is %s, the source's %s: the container's filesystem changes would land on another image: %w",
			m.image.Name, img.Target.Digest, m.image.Target.Digest, errdefs.ErrFailedPrecondition)
	default:
		m.hasImg = true
	}
	log.Info("target ready")
	return nil
}
