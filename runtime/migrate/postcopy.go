package migrate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/ckpt-dev/ckpt/runtime/plan"
	"github.com/ckpt-dev/ckpt/runtime/policy"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	imagespec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"
)

// Post-copy: the source's shim dumps lazily (a task Update sets the
// options, policy.Lazy; containerd carries no others) and answers the
// checkpoint at CRIU's status-ready, the task frozen and CRIU's page
// server serving its memory. The checkpoint, without the memory, goes to
// the target as in stop-and-copy; the target's shim restores it with
// lazy pages from the source's page server (io.ckpt.restore.*
// annotations in the container's spec), so the container runs there
// before its memory has arrived. The source's task ends when the last
// page has been fetched; then it is deleted.

// postCopyGrace is how long past the transfer timeout the source's end
// is waited for.
const postCopyGrace = time.Minute

func (c *Config) postCopyDefaults() error {
	if c.PageServer == "" {
		return fmt.Errorf("post-copy needs the address the source's page server listens on, reachable from the target (--page-server HOST:PORT), or --copy: %w", errdefs.ErrInvalidArgument)
	}
	ps, err := plan.ParsePageServer(c.PageServer)
	if err != nil {
		return fmt.Errorf("page server: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	if ps.Host == "" || ps.Host == "0.0.0.0" || ps.Host == "::" {
		return fmt.Errorf("page server %q: the target dials this address: give one of the source host's: %w", c.PageServer, errdefs.ErrInvalidArgument)
	}
	if c.TransferTimeout <= 0 {
		c.TransferTimeout = DefaultTransferTimeout
	}
	return nil
}

// DefaultTransferTimeout bounds how long the source stays frozen serving
// its memory (the source's shim thaws it afterwards).
const DefaultTransferTimeout = 10 * time.Minute

// startTransfer makes the source's next checkpoint lazy and checkpoints
// it: on return the task is frozen, its memory served, its checkpoint
// (without the memory) an image in the source's content store. A failure
// leaves the source running.
func (m *move) startTransfer(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.StepTimeout)
	defer cancel()
	lazy := policy.Lazy{PageServer: m.cfg.PageServer, TLS: m.cfg.PageTLS, TransferTimeout: m.cfg.TransferTimeout}
	if err := m.srcTask.Update(cctx, client.WithAnnotations(lazy.Annotations())); err != nil {
		return fmt.Errorf("the source's shim does not take ckpt's lazy checkpoint options (ckpt's shim on the source older than this ckpt?); the source was not touched: %w", err)
	}
	// The wait outlives this step: the source ends when its last page
	// has moved (awaitTransfer); Run's end cancels it.
	exitC, err := m.srcTask.Wait(m.waitCtx)
	if err != nil {
		return fmt.Errorf("wait on the source task: %w", err)
	}
	m.srcExit = exitC
	if err := m.checkpointImage(cctx, m.log.WithFields(logrus.Fields{"mode": "post-copy", "page_server": m.cfg.PageServer})); err != nil {
		return err
	}
	m.transferring = true
	m.restoreAnnotations = policy.LazyRestore{PageServer: m.cfg.PageServer, TLS: m.cfg.PageTLS}.Annotations()
	m.log.Info("source frozen, its memory served")
	return nil
}

// abortTransfer ends the source's lazy transfer: its shim kills the page
// server and the task runs on, thawed, with its memory.
func (m *move) abortTransfer(ctx context.Context) error {
	if !m.transferring {
		return nil
	}
	err := m.srcTask.Update(ctx, client.WithAnnotations(map[string]string{policy.TransferAnnotation: policy.TransferAbort}))
	if err != nil {
		return fmt.Errorf("abort the source's transfer (its shim thaws the task by itself after %s): %w", m.cfg.TransferTimeout, err)
	}
	m.transferring = false
	st, err := m.srcTask.Status(ctx)
	if err != nil || st.Status != client.Running {
		return fmt.Errorf("the source task is %q after the abort of its transfer (%v)", st.Status, err)
	}
	return nil
}

// awaitTransfer waits, once the task runs on the target, until every page
// has moved: the source's task ends (CRIU ends it after the last page).
// The target's task ending first means the transfer failed: the source's
// shim thaws the source, which then runs on, and the target's task goes.
func (m *move) awaitTransfer(ctx context.Context) error {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.TransferTimeout+postCopyGrace)
	defer cancel()
	dstExit, err := m.dstTask.Wait(wctx)
	if err != nil {
		return fmt.Errorf("wait on the target task: %w", err)
	}
	m.log.Info("moving the memory (the container runs on the target)")
	select {
	case st := <-m.srcExit:
		if err := st.Error(); err != nil {
			return m.transferFailed(wctx, fmt.Errorf("wait on the source task: %w", err))
		}
		m.transferring = false
		m.log.WithField("source_exit", st.ExitCode()).Info("every page moved; the source task ended")
		return nil
	case st := <-dstExit:
		return m.transferFailed(wctx, fmt.Errorf("the target's task exited (status %d) before every page had moved", st.ExitCode()))
	case <-ctx.Done():
		// Nothing can be undone now: the target runs, the source holds the
		// pages not yet moved. The transfer goes on without the client.
		return fmt.Errorf("interrupted once the container ran on the target (it runs there): its memory is still moving from the source, whose task ends when the last page has moved (its shim thaws it instead if the transfer fails); then delete the source's task and container %s in namespace %s: %w",
			m.cfg.ID, m.cfg.Namespace, ctx.Err())
	case <-wctx.Done():
		return m.transferFailed(wctx, fmt.Errorf("the source did not end within %s: %w", m.cfg.TransferTimeout+postCopyGrace, wctx.Err()))
	}
}

// transferFailed: the target has lost its memory's source; the source runs
// on (its shim thaws it when CRIU reports the failed transfer).
func (m *move) transferFailed(ctx context.Context, cause error) error {
	m.log.WithError(cause).Warn("the transfer failed: keeping the source, removing the target")
	errs := []error{fmt.Errorf("migrate %s: %w", m.cfg.ID, cause)}
	if err := m.abortTransfer(ctx); err != nil && !errdefs.IsFailedPrecondition(err) {
		errs = append(errs, err)
	}
	if err := m.cleanTarget(ctx); err != nil {
		errs = append(errs, fmt.Errorf("target not fully cleaned: %w", err))
	}
	if st, err := m.srcTask.Status(ctx); err == nil && st.Status == client.Running {
		errs[0] = fmt.Errorf("%w (the source runs on with its memory; the target's container was removed)", errs[0])
	} else {
		errs = append(errs, fmt.Errorf("the source task is %q (%v)", st.Status, err))
	}
	m.dropCheckpoint(ctx)
	return errors.Join(errs...)
}

// withAnnotations adds annotations to the restored container's spec.
func withAnnotations(a map[string]string) client.RestoreOpts {
	return func(context.Context, string, *client.Client, client.Image, *imagespec.Index) client.NewContainerOpts {
		return func(_ context.Context, _ *client.Client, c *containers.Container) error {
			return editSpec(c, func(s *specs.Spec) {
				if s.Annotations == nil {
					s.Annotations = map[string]string{}
				}
				maps.Copy(s.Annotations, a)
			})
		}
	}
}

// clearRestoreAnnotations takes the lazy restore's annotations out of the
// target container's spec once its task runs: a later restore of it must
// not look for a page server that is gone.
func (m *move) clearRestoreAnnotations(ctx context.Context) {
	if len(m.restoreAnnotations) == 0 {
		return
	}
	err := m.dstCtr.Update(ctx, func(_ context.Context, _ *client.Client, c *containers.Container) error {
		return editSpec(c, func(s *specs.Spec) {
			for k := range s.Annotations {
				if strings.HasPrefix(k, policy.RestoreAnnotationPrefix) {
					delete(s.Annotations, k)
				}
			}
		})
	})
	if err != nil {
		m.log.WithError(err).Warnf("remove the %s* annotations from the target container's spec: a later restore of it would look for the source's page server", policy.RestoreAnnotationPrefix)
	}
}

// editSpec changes a container record's OCI spec.
func editSpec(c *containers.Container, edit func(*specs.Spec)) error {
	if c.Spec == nil {
		return fmt.Errorf("container %s has no spec", c.ID)
	}
	var s specs.Spec
	if err := json.Unmarshal(c.Spec.GetValue(), &s); err != nil {
		return fmt.Errorf("container %s's spec: %w", c.ID, err)
	}
	edit(&s)
	a, err := typeurl.MarshalAnyToProto(&s)
	if err != nil {
		return err
	}
	c.Spec = a
	return nil
}
