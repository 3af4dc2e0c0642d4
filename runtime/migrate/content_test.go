package migrate

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/plugins/content/local"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sirupsen/logrus"
)

// labels is a local store's label store (containerd's metadata store keeps
// them in a real daemon).
type labels struct {
	mu sync.Mutex
	m  map[digest.Digest]map[string]string
}

func (l *labels) Get(d digest.Digest) (map[string]string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.m[d], nil
}

func (l *labels) Set(d digest.Digest, m map[string]string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.m[d] = m
	return nil
}

func (l *labels) Update(d digest.Digest, m map[string]string) (map[string]string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m[d] == nil {
		l.m[d] = map[string]string{}
	}
	for k, v := range m {
		l.m[d][k] = v
	}
	return l.m[d], nil
}

func newStore(t *testing.T) (content.Store, *labels) {
	ls := &labels{m: map[digest.Digest]map[string]string{}}
	s, err := local.NewLabeledStore(t.TempDir(), ls)
	if err != nil {
		t.Fatal(err)
	}
	return s, ls
}

func put(t *testing.T, s content.Store, mediaType string, data []byte) ocispec.Descriptor {
	d := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}
	if err := content.WriteBlob(context.Background(), s, d.Digest.String(), bytes.NewReader(data), d); err != nil {
		t.Fatal(err)
	}
	return d
}

// checkpointTree writes what a checkpoint image holds: an index of an
// image manifest (config, layer) and a checkpoint blob.
func checkpointTree(t *testing.T, s content.Store) (index ocispec.Descriptor, all []ocispec.Descriptor) {
	cfg := put(t, s, ocispec.MediaTypeImageConfig, []byte(`{"architecture":"amd64","os":"linux"}`))
	layer := put(t, s, ocispec.MediaTypeImageLayer, bytes.Repeat([]byte("layer"), 1000))
	mdata, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: cfg, Layers: []ocispec.Descriptor{layer}})
	manifest := put(t, s, ocispec.MediaTypeImageManifest, mdata)
	cp := put(t, s, images.MediaTypeContainerd1Checkpoint, bytes.Repeat([]byte("pages"), 100000))
	idata, _ := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{manifest, cp}})
	index = put(t, s, ocispec.MediaTypeImageIndex, idata)
	return index, []ocispec.Descriptor{cfg, layer, manifest, cp, index}
}

// TestCopierTree: every blob arrives, parents carry the gc labels that
// keep their children once the lease is gone, and a second copy sends
// nothing.
func TestCopierTree(t *testing.T) {
	ctx := context.Background()
	from, _ := newStore(t)
	to, ls := newStore(t)
	index, all := checkpointTree(t, from)
	var want int64
	for _, d := range all {
		want += d.Size
	}
	total, err := treeSize(ctx, from, index)
	if err != nil || total != want {
		t.Fatalf("treeSize %d (%v), want %d", total, err, want)
	}
	c := &copier{from: from, to: to, log: logrus.NewEntry(logrus.New())}
	if err := c.tree(ctx, index); err != nil {
		t.Fatal(err)
	}
	if c.copied.Load() != want {
		t.Errorf("copied %d bytes, want %d", c.copied.Load(), want)
	}
	for _, d := range all {
		if _, err := to.Info(ctx, d.Digest); err != nil {
			t.Errorf("%s %s missing on the target: %v", d.MediaType, d.Digest, err)
		}
	}
	gc := func(d ocispec.Descriptor) string {
		m, _ := ls.Get(d.Digest)
		var vs []string
		for k, v := range m {
			if strings.HasPrefix(k, "containerd.io/gc.ref.content.") {
				vs = append(vs, k+"="+v)
			}
		}
		return strings.Join(vs, ",")
	}
	// index: manifest (m.0) and checkpoint (plain 0); manifest: config, layer.
	for _, p := range []struct {
		parent ocispec.Descriptor
		refs   []ocispec.Descriptor
	}{{all[4], []ocispec.Descriptor{all[2], all[3]}}, {all[2], []ocispec.Descriptor{all[0], all[1]}}} {
		got := gc(p.parent)
		for _, r := range p.refs {
			if !strings.Contains(got, r.Digest.String()) {
				t.Errorf("%s lacks a gc reference to %s: %s", p.parent.MediaType, r.MediaType, got)
			}
		}
	}

	again := &copier{from: from, to: to, log: logrus.NewEntry(logrus.New())}
	if err := again.tree(ctx, index); err != nil {
		t.Fatal(err)
	}
	if again.copied.Load() != 0 {
		t.Errorf("a second copy sent %d bytes", again.copied.Load())
	}
}

// TestCopierCanceled: a copy cut short leaves no ingest on the target.
func TestCopierCanceled(t *testing.T) {
	from, _ := newStore(t)
	to, _ := newStore(t)
	index, _ := checkpointTree(t, from)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c := &copier{from: from, to: to, log: logrus.NewEntry(logrus.New())}
	if err := c.tree(ctx, index); err == nil {
		t.Fatal("a canceled copy succeeded")
	}
	st, err := to.ListStatuses(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 0 {
		t.Fatalf("ingests left on the target: %v", st)
	}
}
