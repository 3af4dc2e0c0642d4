package container

import (
	"path/filepath"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"
)

// cgroupV2 reports a unified-only host. A hybrid host (v1 controllers and
// a controller-less v2) counts as v1, as for runc.
func cgroupV2() bool { return cgroups.IsCgroup2UnifiedMode() }

// cgroupV1Hierarchies are the basenames of the host's v1 mountpoints: the
// bind mounts a container's v1 cgroup mount is made of.
func cgroupV1Hierarchies() ([]string, error) {
	mounts, err := cgroups.GetCgroupMounts(false)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range mounts {
		out = append(out, filepath.Base(m.Mountpoint))
	}
	return out, nil
}

func hasCgroupMount(cfg *configs.Config) bool {
	for _, m := range cfg.Mounts {
		if m.Device == "cgroup" {
			return true
		}
	}
	return false
}

// resolveIn maps a mount destination to its place in rootfs with symlinks
// resolved inside rootfs, as CRIU sees the mountpoint.
func resolveIn(rootfs string) func(string) string {
	return func(dest string) string {
		p, err := securejoin.SecureJoin(rootfs, dest)
		if err != nil {
			return ""
		}
		rel := strings.TrimPrefix(p, rootfs)
		if rel == "" || rel[0] != '/' {
			rel = "/" + rel
		}
		return rel
	}
}

func nsInode(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}
