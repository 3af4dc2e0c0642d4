package migrate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"
)

// copier moves a tree of blobs (an index or manifest and everything it
// references) from one content store to another, as `ctr` moves a
// checkpoint image: children first, each parent committed with the
// containerd.io/gc.ref labels that keep its children once no lease does.
type copier struct {
	from, to content.Store
	log      *logrus.Entry
	// every is how often progress is logged during a blob.
	every time.Duration

	mu     sync.Mutex
	done   map[string]bool
	copied atomic.Int64 // bytes written to the target
	total  int64        // bytes of the tree
}

// tree copies desc and what it references. Blobs the target has are
// skipped (an image it holds already).
// A parent's children are copied concurrently: most are small, and each
// costs a few round trips to the target, which add up to most of a
// post-copy move's copy time when made one after the other.
func (c *copier) tree(ctx context.Context, desc ocispec.Descriptor) error {
	c.mu.Lock()
	if c.done == nil {
		c.done = map[string]bool{}
	}
	seen := c.done[desc.Digest.String()]
	c.done[desc.Digest.String()] = true
	c.mu.Unlock()
	if seen {
		return nil
	}
	children, err := images.Children(ctx, c.from, desc)
	if err != nil {
		return fmt.Errorf("read %s %s: %w", desc.MediaType, desc.Digest, err)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	labels := map[string]string{}
	counts := map[string]int{}
	for _, ch := range children {
		g.Go(func() error { return c.tree(gctx, ch) })
		// The same keys containerd's own fetch writes.
		for _, key := range images.ChildGCLabels(ch) {
			labels[fmt.Sprintf("%s%d", key, counts[key])] = ch.Digest.String()
			counts[key]++
		}
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return c.blob(ctx, desc, labels)
}

func (c *copier) blob(ctx context.Context, desc ocispec.Descriptor, labels map[string]string) error {
	if _, err := c.to.Info(ctx, desc.Digest); err == nil {
		c.log.WithFields(logrus.Fields{"digest": desc.Digest, "bytes": desc.Size}).Debug("target has the blob")
		return nil
	} else if !errdefs.IsNotFound(err) {
		return fmt.Errorf("target content %s: %w", desc.Digest, err)
	}
	ref := "ckpt-migrate-" + desc.Digest.String()
	w, err := content.OpenWriter(ctx, c.to, content.WithRef(ref), content.WithDescriptor(desc))
	if err != nil {
		if errdefs.IsAlreadyExists(err) {
			return nil
		}
		return fmt.Errorf("target content writer for %s: %w", desc.Digest, err)
	}
	ra, err := c.from.ReaderAt(ctx, desc)
	if err != nil {
		w.Close()
		c.abort(ctx, ref)
		return fmt.Errorf("source content %s: %w", desc.Digest, err)
	}
	defer ra.Close()
	stop := c.progress(desc)
	err = content.Copy(ctx, w, &countingReader{ctx: ctx, r: content.NewReader(ra), n: &c.copied}, desc.Size, desc.Digest, content.WithLabels(labels))
	stop()
	w.Close()
	if err != nil && !errdefs.IsAlreadyExists(err) {
		// An ingest left half-written would hold disk on the target.
		c.abort(ctx, ref)
		return fmt.Errorf("copy %s (%d bytes) to the target: %w", desc.Digest, desc.Size, err)
	}
	return nil
}

// abort drops a half-written ingest, also when ctx was interrupted.
func (c *copier) abort(ctx context.Context, ref string) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := c.to.Abort(actx, ref); err != nil && !errdefs.IsNotFound(err) {
		c.log.WithError(err).WithField("ref", ref).Warn("abort the target's ingest")
	}
}

// progress logs the bytes copied so far every c.every during a blob.
func (c *copier) progress(desc ocispec.Descriptor) (stop func()) {
	c.log.WithFields(logrus.Fields{"digest": desc.Digest, "media_type": desc.MediaType, "bytes": desc.Size}).Info("copying blob")
	if c.every <= 0 {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(c.every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				c.log.WithFields(logrus.Fields{"copied": c.copied.Load(), "total": c.total}).Info("copy progress")
			}
		}
	}()
	return func() { close(done) }
}

// size adds up the tree's blobs, for progress reports.
func treeSize(ctx context.Context, store content.Provider, desc ocispec.Descriptor) (int64, error) {
	var total int64
	seen := map[string]bool{}
	err := images.Walk(ctx, images.HandlerFunc(func(ctx context.Context, d ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		if seen[d.Digest.String()] {
			return nil, images.ErrSkipDesc
		}
		seen[d.Digest.String()] = true
		total += d.Size
		return images.Children(ctx, store, d)
	}), desc)
	if errors.Is(err, images.ErrSkipDesc) {
		err = nil
	}
	return total, err
}

// countingReader counts what is read, and stops at ctx's end whatever
// the stores do with ctx.
type countingReader struct {
	ctx context.Context
	r   io.Reader
	n   *atomic.Int64
}

func (r *countingReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := r.r.Read(p)
	r.n.Add(int64(n))
	return n, err
}
