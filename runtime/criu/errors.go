package criu

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Error is a failed CRIU request with everything that explains it.
type Error struct {
	// Request is the request type: DUMP, RESTORE, ...
	Request string
	// Stage and Handler are the first notification ckpt answered with
	// failure, and why.
	Stage   Stage
	Handler error
	// Errno and Message are CRIU's cr_errno and cr_errmsg.
	Errno   int32
	Message string
	// Succeeded is set when CRIU reported success although a handler failed
	// (CRIU only logs failures at pre-resume and post-resume).
	Succeeded bool
	// Exited and ExitStatus describe criu when it died before answering.
	Exited     bool
	ExitStatus int
	// Signal is the signal that killed criu (0: none).
	Signal int
	// Space is set when the filesystem of CRIU's log has no room left:
	// CRIU may not even have logged why it failed.
	Space string
	// LogFile and LogLines are CRIU's log and its Error lines.
	LogFile  string
	LogLines []string
	// Cause is a transport or context error.
	Cause error
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "criu %s failed", e.Request)
	if e.Stage != "" {
		fmt.Fprintf(&b, " at %s", e.Stage)
		if e.Handler != nil {
			fmt.Fprintf(&b, ": %v", e.Handler)
		}
	}
	if e.Cause != nil {
		fmt.Fprintf(&b, ": %v", e.Cause)
	}
	if e.Space != "" {
		fmt.Fprintf(&b, "; %s", e.Space)
	}
	if r := strings.TrimSpace(e.reason()); r != "" || e.Errno != 0 {
		b.WriteString("; criu says:")
		if r != "" {
			fmt.Fprintf(&b, " %s", r)
		}
		if e.Errno != 0 {
			fmt.Fprintf(&b, " (errno %d: %s)", e.Errno, syscall.Errno(e.Errno).Error())
		}
	}
	if e.Succeeded {
		b.WriteString("; criu went on and reported success")
	}
	if e.Exited && e.Cause == nil && e.Message == "" {
		fmt.Fprintf(&b, "; criu %s before answering", exitInfo{Status: e.ExitStatus, Signal: e.Signal})
	}
	if len(e.LogLines) > 0 {
		fmt.Fprintf(&b, "; %s:\n  %s", e.LogFile, strings.Join(e.LogLines, "\n  "))
	} else if e.LogFile != "" {
		fmt.Fprintf(&b, "; log: %s", e.LogFile)
	}
	return b.String()
}

// Unwrap lets errors.Is/As reach the handler's error and the cause.
func (e *Error) Unwrap() []error {
	var errs []error
	if e.Handler != nil {
		errs = append(errs, e.Handler)
	}
	if e.Cause != nil {
		errs = append(errs, e.Cause)
	}
	if e.Space != "" || e.Errno == int32(unix.ENOSPC) {
		errs = append(errs, unix.ENOSPC)
	}
	return errs
}

// benignErrors are lines CRIU logs at Error level although nothing failed.
// CRIU reports its first Error line as cr_errmsg, so one of these can hide
// the real reason; ckpt skips them.
var benignErrors = []string{
	// Raising the fd limit to fs.nr_open needs CAP_SYS_RESOURCE; CRIU goes
	// on with the current limit.
	"rlimit: Can't setup RLIMIT_NOFILE for self",
}

func isBenign(line string) bool {
	for _, b := range benignErrors {
		if strings.Contains(line, b) {
			return true
		}
	}
	return false
}

// reason is cr_errmsg, or the first real Error line of the log when
// cr_errmsg is one of the benign ones, or nothing: a line every CRIU log
// has says nothing about this failure (a full disk, for one, leaves the
// log without the real reason).
func (e *Error) reason() string {
	if !isBenign(e.Message) {
		return e.Message
	}
	for _, l := range e.LogLines {
		if i := strings.Index(l, "Error ("); i >= 0 {
			return l[i:]
		}
	}
	return ""
}

// lowSpace says whether the filesystem that holds CRIU's log (the work or
// image dir) is full: then CRIU's log may hold nothing but lines every log
// has, and the full disk is the reason to report.
func lowSpace(logFile string) string {
	if logFile == "" {
		return ""
	}
	var st unix.Statfs_t
	if err := unix.Statfs(filepath.Dir(logFile), &st); err != nil {
		return ""
	}
	switch {
	case st.Bavail == 0 && st.Blocks > 0:
		return fmt.Sprintf("the filesystem of %s is full (%v)", filepath.Dir(logFile), unix.ENOSPC)
	case st.Ffree == 0 && st.Files > 0:
		return fmt.Sprintf("the filesystem of %s has no free inodes (%v)", filepath.Dir(logFile), unix.ENOSPC)
	}
	return ""
}

// maxLogLines bounds how much of a CRIU log an error quotes: the last lines
// are the ones that explain the failure.
const maxLogLines = 12

// errorLines returns the last Error lines of a CRIU log.
func errorLines(path string) []string {
	if path == "" {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		// CRIU's format: "(00.012345) Error (criu/file.c:123): message";
		// the parasite and restorer log "pie: N: Error ...".
		if l := sc.Text(); strings.Contains(l, "Error") && !isBenign(l) {
			lines = append(lines, strings.TrimSpace(l))
			if len(lines) > maxLogLines {
				lines = lines[1:]
			}
		}
	}
	return lines
}

// LogErrors are the Error lines of a criu log (the last few), for callers
// that run criu from its command line (criu lazy-pages).
func LogErrors(path string) []string { return errorLines(path) }
