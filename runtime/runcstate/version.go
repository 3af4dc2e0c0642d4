package runcstate

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"

	"github.com/ckpt-dev/ckpt/runtime/bootcache"
	runc "github.com/containerd/go-runc"
)

// runcModule is the module whose libcontainer types ckpt writes.
const runcModule = "github.com/opencontainers/runc"

// fallbackVersion is go.mod's runc version, for binaries built without
// module information. TestPinnedVersionMatchesGoMod keeps it honest.
const fallbackVersion = "1.5.2"

// PinnedVersion is the runc version whose state format ckpt writes: the
// version of the runc module ckpt is built with, without the leading v.
func PinnedVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == runcModule {
				if d.Replace != nil {
					d = d.Replace
				}
				return strings.TrimPrefix(d.Version, "v")
			}
		}
	}
	return fallbackVersion
}

// VersionError says the installed runc is not the one ckpt writes state for.
type VersionError struct {
	Binary    string
	Installed string
	Pinned    string
}

func (e *VersionError) Error() string {
	inst := e.Installed
	if inst == "" {
		inst = "an unrecognised version"
	}
	return fmt.Sprintf("%s is runc %s, but ckpt writes runc %s's state.json: restoring would leave a container runc cannot manage; install runc %s",
		e.Binary, inst, e.Pinned, e.Pinned)
}

// versionCache keeps what each runc binary said its version was, for this
// boot: a restore then costs no exec of runc (see package bootcache).
var versionCache = &bootcache.Cache[string]{File: "/run/ckpt/runc-version.json"}

// CheckVersion fails with a *VersionError unless binary ("" = runc in
// PATH) is runc PinnedVersion, as `<binary> --version` says (asked once per
// binary and boot).
func CheckVersion(ctx context.Context, binary string) error {
	if binary == "" {
		binary = "runc"
	}
	installed, err := installedVersion(ctx, binary)
	if err != nil {
		return fmt.Errorf("check runc version (%s --version): %w", binary, err)
	}
	if pinned := PinnedVersion(); installed != pinned {
		return &VersionError{Binary: binary, Installed: installed, Pinned: pinned}
	}
	return nil
}

func installedVersion(ctx context.Context, binary string) (string, error) {
	path, err := exec.LookPath(binary)
	if err != nil {
		return "", err
	}
	if path, err = filepath.Abs(path); err != nil {
		return "", err
	}
	bin, berr := bootcache.Identify(path)
	if berr == nil {
		if v, ok := versionCache.Load(bin); ok {
			return v, nil
		}
	}
	v, err := (&runc.Runc{Command: path}).Version(ctx)
	if err != nil {
		return "", err
	}
	if berr == nil {
		versionCache.Store(bin, v.Runc)
	}
	return v.Runc, nil
}
