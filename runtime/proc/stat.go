package proc

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Stat is what /proc/<pid>/stat tells apart a process from a later one
// that reuses its pid (runc records its init's start time for that).
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
