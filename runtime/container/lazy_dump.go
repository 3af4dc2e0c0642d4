package container

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"github.com/ckpt-dev/ckpt/runtime/image"
	"github.com/ckpt-dev/ckpt/runtime/plan"
	"github.com/containerd/log"
)

// TLS is the page server's TLS, on both ends of a lazy transfer.
type TLS = plan.TLS

// DefaultTransferTimeout bounds a lazy dump's transfer when the caller
// sets no TransferTimeout.
const DefaultTransferTimeout = 10 * time.Minute

// ErrTransferTimeout is why a lazy dump was aborted by its timeout.
var ErrTransferTimeout = errors.New("lazy pages transfer timed out")

// LazyCheckpoint is a lazy dump that StartCheckpoint returned at
// status-ready: the images (without memory) and ckpt.json are written, the
// container is frozen and CRIU's page server serves its memory.
type LazyCheckpoint struct {
	md     image.Metadata
	cancel context.CancelCauseFunc
	done   chan struct{}
	result *image.Metadata
	err    error
}

// StartCheckpoint starts a lazy dump (opts.LazyPages) and returns at
// status-ready, or with the dump's error (the container then runs on,
// thawed). The transfer goes on after ctx ends; Wait or Abort end it.
func StartCheckpoint(ctx context.Context, opts CheckpointOptions) (*LazyCheckpoint, error) {
	if !opts.LazyPages {
		return nil, errors.New("StartCheckpoint is for lazy dumps; use Checkpoint")
	}
	timeout := opts.TransferTimeout
	if timeout <= 0 {
		timeout = DefaultTransferTimeout
	}
	cctx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	lc := &LazyCheckpoint{cancel: cancel, done: make(chan struct{})}
	ready := make(chan image.Metadata, 1)
	go func() {
		defer close(lc.done)
		defer cancel(nil)
		var timer *time.Timer
		lc.result, lc.err = checkpoint(cctx, opts, func(md image.Metadata) {
			// From here the container is frozen only as long as the
			// transfer is allowed to take.
			timer = time.AfterFunc(timeout, func() { cancel(fmt.Errorf("%w after %s", ErrTransferTimeout, timeout)) })
			ready <- md
		})
		if timer != nil {
			timer.Stop()
		}
		if errors.Is(context.Cause(cctx), ErrTransferTimeout) {
			lc.err = fmt.Errorf("%w: %w", context.Cause(cctx), lc.err)
		}
	}()
	select {
	case md := <-ready:
		lc.md = md
		return lc, nil
	case <-lc.done:
		select {
		case md := <-ready:
			lc.md = md
			return lc, nil
		default:
		}
		return nil, lc.err
	case <-ctx.Done():
		cancel(ctx.Err())
		<-lc.done
		return nil, fmt.Errorf("checkpoint of %q: %w", opts.ID, ctx.Err())
	}
}

// Metadata is ckpt.json as committed at status-ready.
func (lc *LazyCheckpoint) Metadata() image.Metadata { return lc.md }

// Done is closed when CRIU has answered: every page was fetched, or the
// transfer failed, timed out or was aborted.
func (lc *LazyCheckpoint) Done() <-chan struct{} { return lc.done }

// Wait waits for the end of the transfer and returns the final metadata
// (with CRIU's statistics). After success the container is gone (unless
// LeaveRunning) and runc's state deleted; after a failure the container
// runs again, thawed, and the images are removed. When ctx ends first,
// Wait returns ctx's error and the transfer goes on.
func (lc *LazyCheckpoint) Wait(ctx context.Context) (*image.Metadata, error) {
	select {
	case <-lc.done:
		return lc.result, lc.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Abort kills the dumping criu: the page server goes, the container is
// thawed and runs on with its memory, the images are removed. A lazy
// restore still fetching pages fails. Abort fails if the transfer had
// already completed.
func (lc *LazyCheckpoint) Abort(ctx context.Context) error {
	lc.cancel(errors.New("lazy checkpoint aborted"))
	select {
	case <-lc.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if lc.err == nil {
		return errors.New("the lazy transfer had already completed: the container's memory is at the restore")
	}
	return nil
}

// lazyDumpPlan checks a lazy dump's options before anything is frozen.
func lazyDumpPlan(ctx context.Context, opts CheckpointOptions) (*plan.PageServer, error) {
	if !opts.LazyPages {
		if opts.PageServer != "" || opts.TLS.Enabled {
			return nil, errors.New("a page server and TLS are options of a lazy dump (LazyPages)")
		}
		return nil, nil
	}
	if opts.PreDump {
		return nil, errors.New("a pre-dump cannot be lazy")
	}
	if opts.PageServer == "" {
		return nil, errors.New("a lazy dump needs a page server address (ADDR:PORT) to serve its memory")
	}
	ps, err := plan.ParsePageServer(opts.PageServer)
	if err != nil {
		return nil, err
	}
	ps.TLS = opts.TLS
	for _, f := range []string{opts.TLS.CACert, opts.TLS.Cert, opts.TLS.Key} {
		if f == "" {
			continue
		}
		if _, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("page server TLS: %w", err)
		}
	}
	if err := ensureLazyPipes(ctx, procSys, hasCapSysResource()); err != nil {
		return nil, err
	}
	return &ps, nil
}

// procSys is where sysctls are read and written (a test's dir stands in).
var procSys = "/proc/sys"

// lazyPipeBytes is the pipe size CRIU's lazy page server asks for
// (PIPE_MAX_SIZE pages: what an order-3 allocation of 40-byte pipe
// buffers holds), as the kernel rounds it: a power of two of pages.
func lazyPipeBytes() int {
	ps := os.Getpagesize()
	pages := (8 * ps / 40)
	n := 1
	for n < pages {
		n <<= 1
	}
	return n * ps
}

// ensureLazyPipes works around a CRIU defect (docs/migration.md, "Post-copy
// on this kernel"): the lazy page server sizes its pipe to lazyPipeBytes
// and, without CAP_SYS_RESOURCE, the kernel refuses anything above
// fs.pipe-max-size (1 MiB by default). CRIU ignores that error, leaves its
// sink fd at -1 and fails the transfer at the first page it sends
// ("page-pipe: splice: -1: Bad file descriptor"), after the target has
// started restoring. So: with the capability nothing is needed; without
// it, fs.pipe-max-size is raised (never lowered) before the dump, or the
// dump is refused with the reason, before anything is frozen.
func ensureLazyPipes(ctx context.Context, sysDir string, capSysResource bool) error {
	if capSysResource {
		return nil
	}
	path := sysDir + "/fs/pipe-max-size"
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("lazy dump: read fs.pipe-max-size: %w", err)
	}
	cur, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		return fmt.Errorf("lazy dump: fs.pipe-max-size %q: %w", raw, err)
	}
	need := lazyPipeBytes()
	if cur >= need {
		return nil
	}
	if err := os.WriteFile(path, []byte(strconv.Itoa(need)), 0); err != nil {
		return fmt.Errorf("lazy dump: CRIU's page server needs pipes of %d bytes, but fs.pipe-max-size is %d and this process lacks CAP_SYS_RESOURCE; raising it failed (set it to %d or grant CAP_SYS_RESOURCE): %w", need, cur, need, err)
	}
	log.G(ctx).WithField("old", cur).WithField("new", need).
		Warn("raised fs.pipe-max-size for CRIU's lazy page server (no CAP_SYS_RESOURCE here)")
	return nil
}

// hasCapSysResource reads this process's effective capabilities: criu
// inherits them.
func hasCapSysResource() bool {
	const capSysResource = 24
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && caps&(1<<capSysResource) != 0
		}
	}
	return false
}

// lazyConfigFile is the CRIU config file bindPageServer writes.
const lazyConfigFile = "criu-lazy.conf"

// bindPageServer makes a lazy dump's page server listen on the address
// asked for. CRIU 4.2 ignores ps.address of a lazy dump in RPC mode, but
// the RPC config file, read after the request's options, may set it. A
// container that brings a CRIU config file of its own (org.criu.config)
// keeps it, and the page server listens on every address.
func bindPageServer(ctx context.Context, copts *rpc.CriuOpts, ps *plan.PageServer, dir string) error {
	if ps == nil || ps.Host == "" {
		return nil
	}
	if copts.ConfigFile != nil {
		log.G(ctx).WithField("config-file", copts.GetConfigFile()).
			Warn("the container has a CRIU config file: the lazy page server listens on every address, not only " + ps.Host)
		return nil
	}
	path := filepath.Join(dir, lazyConfigFile)
	if err := os.WriteFile(path, []byte("address "+ps.Host+"\n"), 0o600); err != nil {
		return fmt.Errorf("lazy dump: write the page server's address for CRIU: %w", err)
	}
	copts.ConfigFile = &path
	return nil
}
