package runcstate

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/opencontainers/runc/libcontainer/configs"
)

// Stat is what runc reads from /proc/<pid>/stat to tell its init apart
// from a later process that reuses the pid.
type Stat struct {
	State     byte   // R, S, Z, ...
	StartTime uint64 // clock ticks since boot
}

// ReadStat parses /proc/<pid>/stat. The command name may contain spaces
// and parentheses, so fields are counted from the last ')'.
func ReadStat(pid int) (Stat, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return Stat{}, err
	}
	return parseStat(string(data))
}

func parseStat(s string) (Stat, error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return Stat{}, fmt.Errorf("malformed /proc stat: %q", s)
	}
	// Fields after the command: state is field 3 of stat(5), starttime 22.
	f := strings.Fields(s[i+1:])
	if len(f) < 20 || len(f[0]) != 1 {
		return Stat{}, fmt.Errorf("malformed /proc stat: %q", s)
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return Stat{}, fmt.Errorf("malformed start time in /proc stat: %w", err)
	}
	return Stat{State: f[0][0], StartTime: start}, nil
}

// Alive reports whether pid is still the process that started at start
// and has not exited.
func Alive(pid int, start uint64) bool {
	if pid <= 0 {
		return false
	}
	st, err := ReadStat(pid)
	if err != nil {
		return false
	}
	return st.StartTime == start && st.State != 'Z' && st.State != 'X'
}

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
