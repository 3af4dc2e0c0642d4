package runcstate

import (
	"context"
	"fmt"
	"runtime/debug"
	"strings"

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

// CheckVersion runs `<binary> --version` and fails with a *VersionError
// unless it is PinnedVersion.
func CheckVersion(ctx context.Context, binary string) error {
	if binary == "" {
		binary = "runc"
	}
	r := &runc.Runc{Command: binary}
	v, err := r.Version(ctx)
	if err != nil {
		return fmt.Errorf("check runc version (%s --version): %w", binary, err)
	}
	if pinned := PinnedVersion(); v.Runc != pinned {
		return &VersionError{Binary: binary, Installed: v.Runc, Pinned: pinned}
	}
	return nil
}
