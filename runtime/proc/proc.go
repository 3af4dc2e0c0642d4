// Package proc reads what ckpt needs of a process tree from /proc: which
// processes a process forked. It knows nothing of containers or CRIU.
package proc

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Children lists the children of every thread of pid (a thread's children
// file lists only the processes that thread forked), nil when pid is gone.
func Children(pid int) []int {
	tids, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return nil
	}
	var out []int
	for _, t := range tids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, t.Name()))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				out = append(out, c)
			}
		}
	}
	return out
}
