package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/ckpt-dev/ckpt/internal/ctrd"
	"github.com/sirupsen/logrus"
)

// extraTargets are the container targets: ckpt's engine on plain runc,
// and containerd's runc shim and ckpt's shim under one private containerd.
// A target that cannot be set up here is left out with a warning; stop
// ends what they started, and saves containerd's log (shim logs included)
// into keep, if set.
func extraTargets(ctx context.Context, scratch, memhog, keep string, want func(string) bool) (targets []Target, stop func()) {
	stop = func() {}
	if !want(targetCkptRunc) && !want(targetRuncShim) && !want(targetCkptShim) {
		return nil, stop
	}
	rootfs := filepath.Join(scratch, "rootfs")
	if err := buildRootfs(rootfs, memhog); err != nil {
		logrus.WithError(err).Warn("no container targets: cannot build the rootfs")
		return nil, stop
	}
	if want(targetCkptRunc) {
		if r, err := newCkptRunc(scratch, rootfs); err != nil {
			logrus.WithError(err).Warn("no ckpt-runc target")
		} else {
			targets = append(targets, r)
		}
	}
	if !want(targetRuncShim) && !want(targetCkptShim) {
		return targets, stop
	}
	d, err := ctrd.Start(ctx, rootfs)
	if err != nil {
		logrus.WithError(err).Warn("no containerd targets: the private containerd did not start")
		return targets, stop
	}
	// Both shims start from disk: the ckpt shim just built would otherwise
	// sit in the page cache as it was written, in large folios that a
	// process maps whole on first touch (its entire binary resident), and
	// the installed runc shim as it was read back, page by page; their
	// resident memory would differ for that alone.
	shims := []string{filepath.Join(d.Dir, "bin", "containerd-shim-ckpt-v2")}
	if p, err := exec.LookPath("containerd-shim-runc-v2"); err == nil {
		shims = append(shims, p)
	}
	for _, p := range shims {
		if err := dropPageCache(p); err != nil {
			logrus.WithError(err).Warn("shim binaries are not on equal footing: resident memory may differ for it")
		}
	}
	clock := newRPCClock()
	c, err := timedClient(d, clock)
	if err != nil {
		logrus.WithError(err).Warn("no containerd targets: cannot connect")
		d.Stop()
		return targets, stop
	}
	stop = func() {
		c.Close()
		if keep != "" {
			if err := os.MkdirAll(keep, 0o755); err == nil {
				os.WriteFile(filepath.Join(keep, "containerd.log"), []byte(d.Log()), 0o644)
			}
		}
		if err := d.Stop(); err != nil {
			logrus.WithError(err).Warn("stop the private containerd")
		}
	}
	if want(targetRuncShim) {
		targets = append(targets, newCtrdTarget(d, targetRuncShim, runcShimRuntime, clock, c))
	}
	if want(targetCkptShim) {
		targets = append(targets, newCtrdTarget(d, targetCkptShim, ctrd.Runtime, clock, c))
	}
	return targets, stop
}
