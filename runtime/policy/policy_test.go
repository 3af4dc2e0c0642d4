package policy

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/ckpt-dev/ckpt/runtime/container"
	"github.com/containerd/containerd/api/types/runc/options"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
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
		want        Defaults
		wantErr     bool
	}{
		{name: "nothing: exit", want: Defaults{}},
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
			want: Defaults{LeaveRunning: true, TCPEstablished: true, ExtUnixSK: true, FileLocks: true, CgroupsMode: "full"},
		},
		{
			name:    "config path",
			runtime: &runtimeoptions.Options{ConfigPath: configFile},
			want:    Defaults{LeaveRunning: true, FileLocks: true, CgroupsMode: "soft"},
		},
		{
			name:    "config body wins over path",
			runtime: &runtimeoptions.Options{ConfigPath: configFile, ConfigBody: []byte(`{"tcp_established": true}`)},
			want:    Defaults{TCPEstablished: true},
		},
		{
			name:        "annotations win over the config file",
			runtime:     &runtimeoptions.Options{ConfigPath: configFile},
			annotations: map[string]string{"io.ckpt.checkpoint.leave-running": "false"},
			want:        Defaults{FileLocks: true, CgroupsMode: "soft"},
		},
		{
			name:        "a CRI container keeps running",
			annotations: map[string]string{"io.kubernetes.cri.container-type": "container"},
			want:        Defaults{LeaveRunning: true},
		},
		{
			name:        "a CRI container asked to exit",
			annotations: map[string]string{"io.kubernetes.cri.container-type": "container", "io.ckpt.checkpoint.leave-running": "false"},
			want:        Defaults{},
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
			err := SaveDefaults(bundle, a)
			if tt.wantErr {
				if !errdefs.IsInvalidArgument(err) {
					t.Fatalf("got %v; want an invalid argument error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := LoadDefaults(bundle, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// Requested: a client's options exactly; none: the bundle's saved
// defaults with the network namespace empty; no saved defaults: the
// annotations'.
func TestRequested(t *testing.T) {
	bundle := bundleWith(t, map[string]string{"io.ckpt.checkpoint.tcp-established": "true"})
	if err := SaveDefaults(bundle, nil); err != nil {
		t.Fatal(err)
	}
	client := func(o *options.CheckpointOptions) *anypb.Any {
		a, err := typeurl.MarshalAnyToProto(o)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	tests := []struct {
		name        string
		opts        *anypb.Any
		removeSaved bool
		want        container.CheckpointOptions
		wantErr     func(error) bool
	}{
		{name: "none: defaults, network empty", want: container.CheckpointOptions{TCPEstablished: true, EmptyNetNS: true}},
		{name: "empty Any: as none", opts: &anypb.Any{}, want: container.CheckpointOptions{TCPEstablished: true, EmptyNetNS: true}},
		{name: "client's exactly (leave running)", opts: client(&options.CheckpointOptions{}), want: container.CheckpointOptions{LeaveRunning: true}},
		{
			name: "client's, every field",
			opts: client(&options.CheckpointOptions{
				Exit: true, OpenTcp: true, ExternalUnixSockets: true, Terminal: true, FileLocks: true,
				EmptyNamespaces: []string{"network"}, CgroupsMode: "soft", ImagePath: "/img", WorkPath: "/work",
			}),
			want: container.CheckpointOptions{
				ImagePath: "/img", WorkPath: "/work", TCPEstablished: true, ExtUnixSK: true,
				ShellJob: true, FileLocks: true, EmptyNetNS: true, CgroupsMode: "soft",
			},
		},
		{name: "runc task options are not checkpoint options", opts: runtimeOpts(t, &runtimeoptions.Options{}), wantErr: errdefs.IsInvalidArgument},
		{name: "no saved defaults: the annotations", removeSaved: true, want: container.CheckpointOptions{TCPEstablished: true, EmptyNetNS: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.removeSaved {
				if err := os.Remove(filepath.Join(bundle, defaultsFile)); err != nil {
					t.Fatal(err)
				}
			}
			got, err := Requested(tt.opts, bundle)
			if tt.wantErr != nil {
				if !tt.wantErr(err) {
					t.Fatalf("got %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestWith(t *testing.T) {
	yes, no, full := true, false, "full"
	tests := []struct {
		name string
		d    Defaults
		o    Overrides
		want container.CheckpointOptions
	}{
		{name: "nothing: exit, network dumped", want: container.CheckpointOptions{}},
		{
			name: "defaults hold where nothing is said",
			d:    Defaults{LeaveRunning: true, TCPEstablished: true, CgroupsMode: "soft"},
			o:    Overrides{FileLocks: &yes},
			want: container.CheckpointOptions{LeaveRunning: true, TCPEstablished: true, FileLocks: true, CgroupsMode: "soft"},
		},
		{
			name: "a flag wins over a default, either way",
			d:    Defaults{LeaveRunning: true, ExtUnixSK: false, CgroupsMode: "soft"},
			o:    Overrides{LeaveRunning: &no, ExtUnixSK: &yes, CgroupsMode: &full, ShellJob: &yes, EmptyNetNS: &yes},
			want: container.CheckpointOptions{ExtUnixSK: true, CgroupsMode: "full", ShellJob: true, EmptyNetNS: true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.d.With(tt.o); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// LoadDefaults of a container the shim did not create (runc's, `ckpt
// checkpoint`): the annotations given win over the bundle's config.json.
func TestLoadDefaultsAnnotations(t *testing.T) {
	bundle := bundleWith(t, map[string]string{"io.ckpt.checkpoint.file-locks": "true"})
	tests := []struct {
		name        string
		annotations map[string]string
		want        Defaults
		wantErr     bool
	}{
		{name: "config.json's", want: Defaults{FileLocks: true}},
		{name: "given", annotations: map[string]string{"io.ckpt.checkpoint.leave-running": "true"}, want: Defaults{LeaveRunning: true}},
		{name: "given, wrong", annotations: map[string]string{"io.ckpt.checkpoint.leave-running": "maybe"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := LoadDefaults(bundle, tt.annotations)
			if tt.wantErr {
				if !errdefs.IsInvalidArgument(err) {
					t.Fatalf("got %v; want invalid argument", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}
