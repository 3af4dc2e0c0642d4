package runcstate

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/opencontainers/runc/libcontainer/configs"
)

// NamespacePaths is what runc records for a running init: the init's
// /proc/<pid>/ns/<name> for the configured namespaces (joined ones too) and
// every other namespace type the kernel supports, so exec joins exactly
// the init's.
func NamespacePaths(cfg *configs.Config, pid int) map[configs.NamespaceType]string {
	paths := make(map[configs.NamespaceType]string)
	for _, ns := range cfg.Namespaces {
		paths[ns.Type] = ns.GetPath(pid)
	}
	for _, t := range configs.NamespaceTypes() {
		if !configs.IsNamespaceSupported(t) {
			continue
		}
		if _, ok := paths[t]; !ok {
			ns := configs.Namespace{Type: t}
			paths[t] = ns.GetPath(pid)
		}
	}
	return paths
}

// FdLinks returns the link targets of pid's fds 0-2 ("pipe:[123]",
// "/dev/null", ...), which runc calls external descriptors.
func FdLinks(pid int) ([]string, error) {
	links := make([]string, 3)
	for i := range links {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, i))
		if err != nil {
			return nil, err
		}
		links[i] = l
	}
	return links, nil
}

// CapBounding reads a process's capability bounding set: no process of a
// container can hold a capability outside its init's.
func CapBounding(pid int) (uint64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, found := strings.CutPrefix(l, "CapBnd:"); found {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return 0, fmt.Errorf("no CapBnd in /proc/%d/status", pid)
}
