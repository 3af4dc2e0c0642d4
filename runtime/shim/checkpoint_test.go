package shim

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/ckpt-dev/ckpt/runtime/image"
	"github.com/containerd/containerd/api/types/runc/options"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/containerd/v2/pkg/archive"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/types/known/anypb"
)

// bundleWith writes a config.json carrying annotations into a new dir.
func bundleWith(t *testing.T, annotations map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	data, err := json.Marshal(map[string]any{"ociVersion": "1.2.0", "annotations": annotations})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func runtimeOpts(t *testing.T, o *runtimeoptions.Options) *anypb.Any {
	t.Helper()
	a, err := typeurl.MarshalAnyToProto(o)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestCheckpointDefaults(t *testing.T) {
	configFile := filepath.Join(t.TempDir(), "ckpt.json")
	if err := os.WriteFile(configFile, []byte(`{"leave_running": true, "file_locks": true, "cgroups_mode": "soft"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	typo := filepath.Join(t.TempDir(), "typo.json")
	if err := os.WriteFile(typo, []byte(`{"leave-running": true}`), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name        string
		annotations map[string]string
		runtime     *runtimeoptions.Options
		want        checkpointDefaults
		wantErr     bool
	}{
		{name: "nothing: exit", want: checkpointDefaults{}},
		{
			name:        "unrelated annotations",
			annotations: map[string]string{"org.opencontainers.image.title": "x", "io.ckpt.action-script": "/bin/true"},
		},
		{
			name: "annotations",
			annotations: map[string]string{
				"io.ckpt.checkpoint.leave-running": "true", "io.ckpt.checkpoint.tcp-established": "1",
				"io.ckpt.checkpoint.ext-unix-sk": "true", "io.ckpt.checkpoint.file-locks": "TRUE",
				"io.ckpt.checkpoint.cgroups-mode": "full",
			},
			want: checkpointDefaults{LeaveRunning: true, TCPEstablished: true, ExtUnixSK: true, FileLocks: true, CgroupsMode: "full"},
		},
		{
			name:    "config path",
			runtime: &runtimeoptions.Options{ConfigPath: configFile},
			want:    checkpointDefaults{LeaveRunning: true, FileLocks: true, CgroupsMode: "soft"},
		},
		{
			name:    "config body wins over path",
			runtime: &runtimeoptions.Options{ConfigPath: configFile, ConfigBody: []byte(`{"tcp_established": true}`)},
			want:    checkpointDefaults{TCPEstablished: true},
		},
		{
			name:        "annotations win over the config file",
			runtime:     &runtimeoptions.Options{ConfigPath: configFile},
			annotations: map[string]string{"io.ckpt.checkpoint.leave-running": "false"},
			want:        checkpointDefaults{FileLocks: true, CgroupsMode: "soft"},
		},
		{
			name:        "a CRI container keeps running",
			annotations: map[string]string{"io.kubernetes.cri.container-type": "container"},
			want:        checkpointDefaults{LeaveRunning: true},
		},
		{
			name:        "a CRI container asked to exit",
			annotations: map[string]string{"io.kubernetes.cri.container-type": "container", "io.ckpt.checkpoint.leave-running": "false"},
			want:        checkpointDefaults{},
		},
		{name: "unknown annotation", annotations: map[string]string{"io.ckpt.checkpoint.leave-runing": "true"}, wantErr: true},
		{name: "not a boolean", annotations: map[string]string{"io.ckpt.checkpoint.file-locks": "yes please"}, wantErr: true},
		{name: "bad cgroups mode", annotations: map[string]string{"io.ckpt.checkpoint.cgroups-mode": "hard"}, wantErr: true},
		{name: "unknown field in the file", runtime: &runtimeoptions.Options{ConfigPath: typo}, wantErr: true},
		{name: "missing file", runtime: &runtimeoptions.Options{ConfigPath: configFile + ".nope"}, wantErr: true},
		{name: "relative path", runtime: &runtimeoptions.Options{ConfigPath: "ckpt.json"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bundle := bundleWith(t, tt.annotations)
			var a *anypb.Any
			if tt.runtime != nil {
				a = runtimeOpts(t, tt.runtime)
			}
			err := saveCheckpointDefaults(bundle, a)
			if tt.wantErr {
				if !errdefs.IsInvalidArgument(err) {
					t.Fatalf("got %v; want an invalid argument error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := loadCheckpointDefaults(bundle)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestRequestedOptions(t *testing.T) {
	bundle := bundleWith(t, map[string]string{"io.ckpt.checkpoint.tcp-established": "true"})
	if err := saveCheckpointDefaults(bundle, nil); err != nil {
		t.Fatal(err)
	}
	got, err := requestedOptions(nil, bundle)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Exit || !got.OpenTcp || !slices.Equal(got.EmptyNamespaces, []string{"network"}) {
		t.Fatalf("no options: %+v; want exit, tcp-established from the annotation, empty network namespace", got)
	}

	// A client that sends options (ctr, containerd's client) gets exactly
	// those: the annotations are Docker's substitute.
	a, err := typeurl.MarshalAnyToProto(&options.CheckpointOptions{Exit: false})
	if err != nil {
		t.Fatal(err)
	}
	got, err = requestedOptions(a, bundle)
	if err != nil {
		t.Fatal(err)
	}
	if got.Exit || got.OpenTcp || len(got.EmptyNamespaces) != 0 {
		t.Fatalf("explicit options: %+v; want them unchanged", got)
	}

	// A bundle from before the defaults were kept: its annotations count.
	if err := os.Remove(filepath.Join(bundle, checkpointDefaultsFile)); err != nil {
		t.Fatal(err)
	}
	if got, err = requestedOptions(nil, bundle); err != nil || !got.OpenTcp {
		t.Fatalf("no saved defaults: %+v, %v; want the annotation applied", got, err)
	}
}

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
