package docker_test

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/ckpt-dev/ckpt/integration/containerd/harness"
	"github.com/ckpt-dev/ckpt/integration/internal/testutil"
)

// imageName is the busybox image every engine loads.
const imageName = "ckpt/busybox:latest"

// loadImage builds a `docker save` archive of a one-layer busybox image
// (Debian's busybox-static) and loads it: no registry involved.
func (e *engine) loadImage(t *testing.T) error {
	rootfs := filepath.Join(e.dir, "rootfs")
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		return err
	}
	testutil.Rootfs(t, rootfs)
	archive := filepath.Join(e.dir, "busybox.tar")
	f, err := os.Create(archive)
	if err != nil {
		return err
	}
	if err := saveArchive(f, rootfs, imageName); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if out, err := e.docker("load", "--input", archive); err != nil {
		return fmt.Errorf("docker load: %w\n%s", err, out)
	}
	os.RemoveAll(rootfs)
	return os.Remove(archive)
}

// saveArchive writes the `docker save` format: manifest.json naming the
// image config and the layer tar.
func saveArchive(w io.Writer, rootfs, tag string) error {
	layer, err := os.CreateTemp("", "ckpt-layer")
	if err != nil {
		return err
	}
	defer os.Remove(layer.Name())
	defer layer.Close()
	h := sha256.New()
	if err := harness.LayerTar(io.MultiWriter(layer, h), rootfs); err != nil {
		return fmt.Errorf("image layer: %w", err)
	}
	layerSum := hex.EncodeToString(h.Sum(nil))
	config, err := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"config": map[string]any{
			"Env": []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
			"Cmd": []string{"sh"},
		},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + layerSum}},
	})
	if err != nil {
		return err
	}
	configSum := sha256.Sum256(config)
	configName := hex.EncodeToString(configSum[:]) + ".json"
	layerName := layerSum + "/layer.tar"
	manifest, err := json.Marshal([]map[string]any{{
		"Config": configName, "RepoTags": []string{tag}, "Layers": []string{layerName},
	}})
	if err != nil {
		return err
	}

	tw := tar.NewWriter(w)
	for _, f := range []struct {
		name string
		data []byte
	}{{"manifest.json", manifest}, {configName, config}} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.data)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		if _, err := tw.Write(f.data); err != nil {
			return err
		}
	}
	fi, err := layer.Stat()
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: layerSum + "/", Mode: 0o755, Typeflag: tar.TypeDir}); err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: layerName, Mode: 0o644, Size: fi.Size(), Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	if _, err := layer.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if _, err := io.Copy(tw, layer); err != nil {
		return err
	}
	return tw.Close()
}
