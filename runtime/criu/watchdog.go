package criu

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"sync"
	"time"
)

// The watchdog bounds a request that CRIU never finishes. CRIU 4.2.1, given
// a pages image shorter than its pagemap says, loops on "Advanced iov 0
// bytes" forever and writes its log at ~35 MB/s until the disk is full. Two
// rules end such a request (criu and its tree are killed, the request fails
// naming the rule):
//
//   - the log may not grow past Limits.MaxLog;
//   - CRIU must make progress at least every Limits.Stall while it works
//     (not while ckpt's own handler runs, for instance during a hold).
//     Progress is a notification from CRIU, or a log line whose message
//     (the line without its "(ss.uuuuuu)" timestamp) the request has not
//     logged before. A loop repeats the same lines, whatever its period,
//     so it makes no progress; real work logs new addresses, files, pids.
//     Silence is no progress either.
//
// The seen messages are capped (maxSeen); past the cap, unseen lines still
// count as progress and the log limit is what bounds a loop.

// Limits bound a request. Zero fields take the defaults.
type Limits struct {
	// MaxLog is the largest CRIU log a request may write (bytes).
	MaxLog int64
	// Stall is the longest CRIU may work without progress.
	Stall time.Duration
	// Grace is how long an interrupted dump may take to reach the
	// notification where it is rolled back (session.go), before criu is
	// killed anyway.
	Grace time.Duration
}

const (
	// DefaultMaxLog: a restore of a large container at log level 4 writes
	// a few MiB.
	DefaultMaxLog = 64 << 20
	// DefaultStall: CRIU logs every VMA, file and mount it handles; a
	// minute without any new line is far beyond a slow disk.
	DefaultStall = 2 * time.Minute
	// DefaultGrace: the notification that follows the freeze comes after
	// the memory is written, which for a few GiB to a slow disk takes
	// tens of seconds.
	DefaultGrace = 2 * time.Minute
	maxSeen      = 1 << 16
	// watchTick is how often the log is looked at.
	watchTick = 100 * time.Millisecond
)

func (l Limits) withDefaults() Limits {
	if l.MaxLog <= 0 {
		l.MaxLog = DefaultMaxLog
	}
	if l.Stall <= 0 {
		l.Stall = DefaultStall
	}
	if l.Grace <= 0 {
		l.Grace = DefaultGrace
	}
	return l
}

// ErrLogLimit and ErrStalled are the watchdog's reasons (errors.Is).
var (
	ErrLogLimit = errors.New("criu's log outgrew its limit")
	ErrStalled  = errors.New("criu made no progress")
)

var timestamp = regexp.MustCompile(`^\(\s*[0-9]+\.[0-9]+\)\s*`)

// watchdog follows one request's log and progress.
type watchdog struct {
	limits  Limits
	logFile string

	mu       sync.Mutex
	progress time.Time // last progress
	inside   bool      // ckpt's handler runs: CRIU waits for us
	// serving: a lazy dump past status-ready waits for its restore to
	// fetch pages, silent as long as nobody asks; the caller's transfer
	// timeout bounds that wait, not the stall.
	serving bool
	offset  int64  // how much of the log was read
	partial []byte // an unfinished last line
	seen    map[string]struct{}
	last    string // the last message read
}

func newWatchdog(limits Limits, logFile string, now time.Time) *watchdog {
	w := &watchdog{limits: limits.withDefaults(), logFile: logFile, progress: now, seen: map[string]struct{}{}}
	// A log file may already hold an earlier request's lines (a keep_open
	// session, a reused work dir): only growth from here counts.
	if fi, err := os.Stat(logFile); err == nil && logFile != "" {
		w.offset = fi.Size()
	}
	return w
}

// handler marks ckpt's handler running (true) or done (false); both count
// as progress.
func (w *watchdog) handler(running bool, now time.Time) {
	w.mu.Lock()
	w.inside, w.progress = running, now
	w.mu.Unlock()
}

// serve marks the request as a lazy dump's page server (see serving).
func (w *watchdog) serve() {
	w.mu.Lock()
	w.serving = true
	w.mu.Unlock()
}

// check reads what the log gained since the last check and returns the
// error that ends the request, if any.
func (w *watchdog) check(now time.Time) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.logFile != "" {
		if err := w.readLog(now); err != nil {
			return err
		}
	}
	if !w.inside && !w.serving && now.Sub(w.progress) > w.limits.Stall {
		msg := ""
		if w.last != "" {
			msg = fmt.Sprintf("; its last log line: %q", w.last)
		}
		return fmt.Errorf("%w for %s (no notification and no new log line)%s", ErrStalled, w.limits.Stall, msg)
	}
	return nil
}

func (w *watchdog) readLog(now time.Time) error {
	f, err := os.Open(w.logFile)
	if err != nil {
		return nil // not created yet
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil
	}
	size := fi.Size()
	if size > w.limits.MaxLog {
		return fmt.Errorf("%w of %s (%s has %s; its last line: %q)", ErrLogLimit, fmtSize(w.limits.MaxLog), w.logFile, fmtSize(size), lastLine(f, size))
	}
	if size < w.offset {
		w.offset, w.partial = 0, nil // replaced
	}
	if size == w.offset {
		return nil
	}
	buf := make([]byte, size-w.offset)
	n, err := f.ReadAt(buf, w.offset)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil
	}
	w.offset += int64(n)
	data := append(w.partial, buf[:n]...)
	w.partial = nil
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			w.partial = append([]byte(nil), data...)
			break
		}
		w.line(data[:i], now)
		data = data[i+1:]
	}
	return nil
}

func (w *watchdog) line(l []byte, now time.Time) {
	msg := string(timestamp.ReplaceAll(bytes.TrimSpace(l), nil))
	if msg == "" {
		return
	}
	w.last = msg
	if _, ok := w.seen[msg]; ok {
		return
	}
	if len(w.seen) < maxSeen {
		w.seen[msg] = struct{}{}
	}
	w.progress = now
}

// lastLine is the last complete line before size, without its timestamp.
func lastLine(f *os.File, size int64) string {
	const tail = 4096
	off := max(size-tail, 0)
	buf := make([]byte, size-off)
	n, _ := f.ReadAt(buf, off)
	lines := bytes.Split(bytes.TrimRight(buf[:n], "\n"), []byte("\n"))
	if len(lines) < 2 && off > 0 {
		return ""
	}
	return string(timestamp.ReplaceAll(bytes.TrimSpace(lines[len(lines)-1]), nil))
}

func fmtSize(n int64) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}
