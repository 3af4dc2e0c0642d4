package shim

import (
	"context"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ckpt-dev/ckpt/runtime/image"
	"github.com/containerd/containerd/v2/pkg/archive"
)

// tarDigest is the digest of the tar containerd makes of dir, as for a
// checkpoint (and Docker for `docker start --checkpoint`).
func tarDigest(t *testing.T, dir string) [32]byte {
	t.Helper()
	rc := archive.Diff(context.Background(), "", dir)
	defer rc.Close()
	h := sha256.New()
	if _, err := io.Copy(h, rc); err != nil {
		t.Fatal(err)
	}
	return [32]byte(h.Sum(nil))
}

// roundTrip extracts dir's tar into a new dir, as Docker does with a
// checkpoint, and returns the new dir.
func roundTrip(t *testing.T, dir string) string {
	t.Helper()
	rc := archive.Diff(context.Background(), "", dir)
	defer rc.Close()
	out := t.TempDir()
	if _, err := archive.Apply(context.Background(), out, rc); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestStampArchive(t *testing.T) {
	for _, stamp := range []bool{false, true} {
		dir := t.TempDir()
		for name, data := range map[string]string{image.MetadataFile: `{"format":1}`, "pages-1.img": "pages", "core-1.img": "core"} {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if stamp {
			if err := stampArchive(dir); err != nil {
				t.Fatal(err)
			}
		}
		stored := tarDigest(t, dir)
		copied := roundTrip(t, dir)
		reupload := tarDigest(t, copied)
		// Without the stamp the re-upload is the stored blob: that is the
		// collision Docker hits; the stamp must remove it.
		if collides := stored == reupload; collides == stamp {
			t.Fatalf("stamp %v: re-upload collides with the stored checkpoint: %v", stamp, collides)
		}
		if stamp {
			fi, err := os.Stat(filepath.Join(copied, image.MetadataFile))
			if err != nil {
				t.Fatal(err)
			}
			if !fi.ModTime().Equal(time.Unix(0, 0)) {
				t.Fatalf("extracted %s has mtime %v; want 1970-01-01 (extraction clamps)", image.MetadataFile, fi.ModTime())
			}
		}
	}
	if err := stampArchive(t.TempDir()); err == nil {
		t.Fatal("stamp of a dir without ckpt.json: no error")
	}
}
