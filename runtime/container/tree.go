package container

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/runc/libcontainer"
)

// CRIU checkpoints the process tree under the init. A process started
// with `runc exec` (docker exec, ctr task exec) is not in it: its parent
// was runc, and when runc exits the kernel hands it to a reaper outside
// the container. It still runs in the container's namespaces and cgroup,
// so it dies with the container, and a checkpoint would lose it without a
// word. ckpt refuses such a checkpoint instead and names the processes.

// strayProcess is a process in the container's cgroup that is not a
// descendant of its init.
type strayProcess struct {
	Pid     int
	Command string
}

// maxStraysNamed bounds how many processes an error lists.
const maxStraysNamed = 5

// errOutsideTree describes the processes a checkpoint would lose.
func errOutsideTree(id string, strays []strayProcess) error {
	var b strings.Builder
	for i, p := range strays {
		if i == maxStraysNamed {
			fmt.Fprintf(&b, ", and %d more", len(strays)-i)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "pid %d (%s)", p.Pid, p.Command)
	}
	return fmt.Errorf("container %q has %d process(es) outside its init's process tree, started with exec: %s; "+
		"CRIU checkpoints only the init's tree, so they would be lost; end them and checkpoint again: %w",
		id, len(strays), b.String(), errdefs.ErrFailedPrecondition)
}

// strayProcesses lists the processes of the container's cgroup that do not
// descend from its init.
func strayProcesses(st *libcontainer.State) ([]strayProcess, error) {
	dir := containerCgroupDir(st)
	if dir == "" {
		return nil, nil
	}
	pids, err := cgroups.GetAllPids(dir)
	if err != nil {
		return nil, fmt.Errorf("list the container's processes in %s: %w", dir, err)
	}
	parent := make(map[int]int, len(pids))
	for _, pid := range pids {
		ppid, err := readPPid(pid)
		if err != nil {
			continue // gone meanwhile
		}
		parent[pid] = ppid
	}
	return findStrays(st.InitProcessPid, parent), nil
}

// findStrays returns the pids of parent (pid -> ppid) whose ancestry does
// not reach init through processes of the same set.
func findStrays(init int, parent map[int]int) []strayProcess {
	var strays []strayProcess
	for pid := range parent {
		if !descends(pid, init, parent) {
			strays = append(strays, strayProcess{Pid: pid, Command: commandOf(pid)})
		}
	}
	slices.SortFunc(strays, func(a, b strayProcess) int { return a.Pid - b.Pid })
	return strays
}

// descends follows ppid links from pid; a set of n processes has chains of
// at most n links, so a longer walk is a cycle (a pid reused meanwhile).
func descends(pid, init int, parent map[int]int) bool {
	for range len(parent) + 1 {
		if pid == init {
			return true
		}
		pp, ok := parent[pid]
		if !ok {
			return false
		}
		pid = pp
	}
	return false
}

// containerCgroupDir is the cgroup that holds all the container's
// processes: the freezer's on v1 (the one checkpoint freezes), the
// unified one on v2.
func containerCgroupDir(st *libcontainer.State) string {
	for _, k := range []string{"freezer", "", "pids"} {
		if d := st.CgroupPaths[k]; d != "" {
			return d
		}
	}
	return ""
}

// readPPid reads the parent pid from /proc/<pid>/stat (field 4; counted
// from the last ')' because the command may contain anything).
func readPPid(pid int) (int, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	f := strings.Fields(s[i+1:])
	if i < 0 || len(f) < 2 {
		return 0, errors.New("malformed /proc stat")
	}
	return strconv.Atoi(f[1])
}

func commandOf(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || len(b) == 0 {
		return "?"
	}
	c := strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
	if len(c) > 60 {
		c = c[:57] + "..."
	}
	return c
}
