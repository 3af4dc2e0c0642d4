package container

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ckpt-dev/ckpt/runtime/criu"
	"github.com/ckpt-dev/ckpt/runtime/plan"
	"github.com/ckpt-dev/ckpt/runtime/proc"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/log"
)

// lazyReadyTimeout bounds the lazy-pages daemon's start-up: it reads the
// images' process tree and binds its socket, milliseconds.
const lazyReadyTimeout = 10 * time.Second

// LazyLog is the lazy-pages daemon's log, in the restore's work dir.
const LazyLog = "lazy-pages.log"

// lazyDaemon is `criu lazy-pages`: it listens on lazy-pages.socket in the
// restore's work dir (CRIU's restore connects there, relative to its own
// work dir), takes the restored tasks' userfaultfds and fills their memory
// from the images or the source's page server, on demand and in the
// background. It exits when every page is in.
type lazyDaemon struct {
	cmd     *exec.Cmd
	mon     runc.ProcessMonitor
	ec      chan runc.Exit
	logFile string
	started time.Time

	done   chan struct{}
	err    error
	killed sync.Once
}

// startLazyDaemon starts criu lazy-pages for the images in imgDir, with
// workDir as its work dir (the restore's), and returns once it listens.
// ps nil reads the pages from the images (local lazy restore).
func startLazyDaemon(ctx context.Context, criuPath, imgDir, workDir string, ps *plan.PageServer, mon runc.ProcessMonitor) (*lazyDaemon, error) {
	if criuPath == "" {
		var err error
		if criuPath, err = exec.LookPath("criu"); err != nil {
			return nil, fmt.Errorf("lazy restore: %w", err)
		}
	}
	if mon == nil {
		mon = runc.Monitor
	}
	// A stale socket from an earlier run would make CRIU's restore
	// connect to nobody.
	os.Remove(filepath.Join(workDir, "lazy-pages.socket"))
	statusR, statusW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer statusR.Close()
	args := []string{"lazy-pages", "-D", imgDir, "-W", workDir, "--status-fd", "3",
		"-o", LazyLog, "-v" + strconv.Itoa(plan.LogLevel)}
	if ps != nil {
		args = append(args, "--page-server", "--address", ps.Host, "--port", strconv.Itoa(ps.Port))
		args = append(args, ps.TLS.Args()...)
	}
	cmd := exec.Command(criuPath, args...)
	cmd.ExtraFiles = []*os.File{statusW}
	// Pdeathsig: the daemon must not outlive the process that kills the
	// container when it fails (see watch).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	runtime.LockOSThread()
	ec, err := mon.Start(cmd)
	runtime.UnlockOSThread()
	statusW.Close()
	if err != nil {
		return nil, fmt.Errorf("start criu lazy-pages: %w", err)
	}
	d := &lazyDaemon{cmd: cmd, mon: mon, ec: ec, logFile: filepath.Join(workDir, LazyLog), started: time.Now(), done: make(chan struct{})}
	go d.wait()
	log.G(ctx).WithField("lazy-pages-pid", cmd.Process.Pid).WithField("page-server", ps != nil).Debug("criu lazy-pages started")

	ready := make(chan error, 1)
	go func() {
		b := make([]byte, 1)
		_, err := statusR.Read(b)
		ready <- err
	}()
	t := time.NewTimer(lazyReadyTimeout)
	defer t.Stop()
	select {
	case err = <-ready:
		if err == nil {
			return d, nil
		}
		// EOF: it exited before it was ready.
		<-d.done
		err = d.err
	case <-t.C:
		err = fmt.Errorf("not ready after %s", lazyReadyTimeout)
	case <-ctx.Done():
		err = ctx.Err()
	}
	d.kill()
	statusR.Close()
	return nil, fmt.Errorf("criu lazy-pages: %w%s", err, logTail(d.logFile))
}

func (d *lazyDaemon) wait() {
	status, err := d.mon.Wait(d.cmd, d.ec)
	switch {
	case err == nil && status < 0:
		// go-runc's default monitor reports a death by signal as -1
		// (containerd's reaper as 128+signal).
		err = errors.New("killed by a signal")
	case err == nil && status != 0:
		err = fmt.Errorf("exited with status %d", status)
	}
	if err != nil {
		err = fmt.Errorf("%w%s", err, logTail(d.logFile))
	}
	d.err = err
	close(d.done)
}

// failFast calls cancel if the daemon fails while CRIU restores: CRIU's
// restore then fails, and in that failure (CRIU 4.2) it may wait forever
// for the restored root, which it does not parent (rst_sibling). The
// returned stop ends the watch.
func (d *lazyDaemon) failFast(cancel func()) (stop func()) {
	end := make(chan struct{})
	go func() {
		select {
		case <-d.done:
			if d.err != nil {
				cancel()
			}
		case <-end:
		}
	}()
	return func() { close(end) }
}

// failed is the daemon's error if it has ended with one (nil-safe).
func (d *lazyDaemon) failed() error {
	if d == nil {
		return nil
	}
	select {
	case <-d.done:
		return d.err
	default:
		return nil
	}
}

// kill ends the daemon and waits for it.
func (d *lazyDaemon) kill() {
	d.killed.Do(func() { d.cmd.Process.Kill() })
	<-d.done
}

// logTail quotes the Error lines of a criu log, for a failure.
func logTail(path string) string {
	lines := criu.LogErrors(path)
	if len(lines) == 0 {
		return " (log: " + path + ")"
	}
	return " (log " + path + ": " + strings.Join(lines, "; ") + ")"
}

// prepareLazy checks a lazy restore's options against the image and
// starts the lazy-pages daemon, which must listen before CRIU's restore
// starts: it connects to the daemon's socket in its work dir.
func (r *Restoring) prepareLazy(ctx context.Context, p *plan.Restore, imgPath, workDir string) error {
	opts := r.opts
	if !opts.LazyPages {
		if opts.PageServer != "" || opts.TLS.Enabled {
			return errors.New("a page server and TLS are options of a lazy restore (LazyPages)")
		}
		return nil
	}
	var ps *plan.PageServer
	switch {
	case r.md.Options.LazyPages && opts.PageServer == "":
		return errors.New("the checkpoint was dumped with lazy pages: its memory is at the source's page server, give its address")
	case !r.md.Options.LazyPages && opts.PageServer != "":
		return errors.New("the checkpoint holds its memory: a lazy restore reads it from the images, without a page server")
	case opts.PageServer != "":
		s, err := plan.ParsePageServer(opts.PageServer)
		if err != nil {
			return err
		}
		s.TLS = opts.TLS
		ps = &s
	}
	p.LazyPages = true
	d, err := startLazyDaemon(ctx, opts.CriuPath, imgPath, workDir, ps, opts.Monitor)
	if err != nil {
		return err
	}
	r.lazy = d
	return nil
}

// PagesIn is closed when a lazy restore's memory has all arrived, or its
// transfer failed (LazyErr says which); at once for a full restore, or
// when the restore failed.
func (r *Restoring) PagesIn() <-chan struct{} { return r.pagesIn }

// LazyErr is why a lazy transfer failed, once PagesIn is closed. The
// container was then killed: memory the daemon did not deliver would read
// as zeros.
func (r *Restoring) LazyErr() error {
	select {
	case <-r.pagesIn:
		return r.lazyErr
	default:
		return nil
	}
}

// watchLazy waits for the lazy-pages daemon after the restore. When the
// daemon fails, or the transfer outlasts its bound, the restored container
// is killed: once the daemon is gone, the kernel fills the pages it did not
// deliver with zeros, and the container would run on with corrupt memory.
func (r *Restoring) watchLazy(ctx context.Context, restoreErr error) {
	defer close(r.pagesIn)
	d := r.lazy
	if d == nil {
		return
	}
	if restoreErr != nil {
		d.kill()
		r.lazyErr = restoreErr
		return
	}
	timeout := r.opts.TransferTimeout
	if timeout <= 0 {
		timeout = DefaultTransferTimeout
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-d.done:
	case <-t.C:
		d.kill()
		d.err = fmt.Errorf("%w after %s: daemon killed", ErrTransferTimeout, timeout)
	}
	logger := log.G(ctx).WithField("ms", time.Since(d.started).Milliseconds())
	if d.err == nil {
		logger.Info("lazy restore: every page is in")
		return
	}
	r.lazyErr = fmt.Errorf("lazy transfer of container %q failed, container killed: %w", r.opts.ID, d.err)
	logger.WithError(d.err).Error("lazy restore: the transfer failed; killing the container")
	r.mu.Lock()
	start := r.initStart
	r.mu.Unlock()
	pid := r.Pid()
	if !proc.Alive(pid, start) {
		return // gone already (killed, deleted); its pid may be another's now
	}
	// The init of the container's own pid namespace: the kernel kills the
	// rest of the tree with it.
	syscall.Kill(pid, syscall.SIGKILL)
	if r.cg != nil {
		// A tree without a pid namespace of its own outlives its init.
		if pids, err := r.cg.GetAllPids(); err == nil {
			for _, p := range pids {
				syscall.Kill(p, syscall.SIGKILL)
			}
		}
	}
}
