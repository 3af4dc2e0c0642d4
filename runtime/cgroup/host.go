package cgroup

import (
	"path/filepath"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/runc/libcontainer/configs"
)

// V2 reports a unified-only host. A hybrid host (v1 controllers and
// a controller-less v2) counts as v1, as for runc.
func V2() bool { return cgroups.IsCgroup2UnifiedMode() }

// V1Hierarchies are the basenames of the host's v1 mountpoints: the
// bind mounts a container's v1 cgroup mount is made of.
func V1Hierarchies() ([]string, error) {
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

// HasMount reports whether the spec mounts a cgroup filesystem.
func HasMount(cfg *configs.Config) bool {
	for _, m := range cfg.Mounts {
		if m.Device == "cgroup" {
			return true
		}
	}
	return false
}
