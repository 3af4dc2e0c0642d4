package policy

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/ckpt-dev/ckpt/runtime/container"
	"github.com/containerd/containerd/api/types/runc/options"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/types/known/anypb"
)

// defaultsFile keeps, in the bundle, the defaults resolved when the task
// was created.
const defaultsFile = "ckpt-checkpoint.json"

// ConfigOf reads the runtime config from containerd's task options:
// runtimeoptions' ConfigBody or ConfigPath (Docker's, for a runtime
// configured with "options"). Other option types carry none.
func ConfigOf(a *anypb.Any) (Config, error) {
	ro := &runtimeoptions.Options{}
	if a == nil || !typeurl.Is(a, ro) {
		return Config{}, nil
	}
	if err := typeurl.UnmarshalTo(a, ro); err != nil {
		return Config{}, fmt.Errorf("runtime options: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	return Config{Body: ro.ConfigBody, Path: ro.ConfigPath}, nil
}

// SaveDefaults resolves the defaults of a task being created, from
// containerd's task options and the bundle's annotations, and keeps them
// in the bundle. A mistake fails the create, where the user sees it, not
// a later checkpoint.
func SaveDefaults(bundle string, taskOptions *anypb.Any) error {
	cfg, err := ConfigOf(taskOptions)
	if err != nil {
		return err
	}
	annotations, err := ReadAnnotations(bundle)
	if err != nil {
		return err
	}
	d, err := Resolve(cfg, annotations)
	if err != nil {
		return err
	}
	data, err := json.Marshal(d)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(bundle, defaultsFile), data, 0o600)
}

// LoadDefaults reads what SaveDefaults kept; a bundle without it (a task
// an older shim or runc itself created) gets annotations' defaults only:
// those given, else the bundle's config.json's.
func LoadDefaults(bundle string, annotations map[string]string) (Defaults, error) {
	var d Defaults
	data, err := os.ReadFile(filepath.Join(bundle, defaultsFile))
	if os.IsNotExist(err) {
		if annotations == nil {
			if annotations, err = ReadAnnotations(bundle); err != nil {
				return d, err
			}
		}
		return Resolve(Config{}, annotations)
	}
	if err != nil {
		return d, err
	}
	if err := json.Unmarshal(data, &d); err != nil {
		return d, fmt.Errorf("%s: %w", defaultsFile, err)
	}
	return d, nil
}

// Requested are the options of a containerd checkpoint request: the
// client's (a), exactly, or, when it sent none, ForSilentClient of the
// bundle's defaults.
func Requested(a *anypb.Any, bundle string) (container.CheckpointOptions, error) {
	if a != nil && a.GetTypeUrl() != "" {
		opts, err := clientOptions(a)
		if err != nil {
			return container.CheckpointOptions{}, err
		}
		return FromClient(opts), nil
	}
	d, err := LoadDefaults(bundle, nil)
	if err != nil {
		return container.CheckpointOptions{}, err
	}
	return ForSilentClient(d), nil
}

// clientOptions reads containerd's runc CheckpointOptions, the only type
// containerd accepts.
func clientOptions(a *anypb.Any) (*options.CheckpointOptions, error) {
	v, err := typeurl.UnmarshalAny(a)
	if err != nil {
		return nil, fmt.Errorf("checkpoint options: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	opts, ok := v.(*options.CheckpointOptions)
	if !ok {
		return nil, fmt.Errorf("checkpoint options of type %T (want containerd.runc.v1.CheckpointOptions): %w", v, errdefs.ErrInvalidArgument)
	}
	return opts, nil
}

// FromClient maps containerd's runc CheckpointOptions to CRIU's names.
func FromClient(opts *options.CheckpointOptions) container.CheckpointOptions {
	return container.CheckpointOptions{
		ImagePath:      opts.ImagePath,
		WorkPath:       opts.WorkPath,
		LeaveRunning:   !opts.Exit,
		TCPEstablished: opts.OpenTcp,
		ExtUnixSK:      opts.ExternalUnixSockets,
		ShellJob:       opts.Terminal,
		FileLocks:      opts.FileLocks,
		EmptyNetNS:     slices.Contains(opts.EmptyNamespaces, "network"),
		CgroupsMode:    opts.CgroupsMode,
	}
}

// ReadAnnotations reads the annotations of the bundle's config.json.
func ReadAnnotations(bundle string) (map[string]string, error) {
	data, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return nil, err
	}
	var spec struct {
		Annotations map[string]string `json:"annotations"`
	}
	if err := json.Unmarshal(data, &spec); err != nil {
		return nil, fmt.Errorf("config.json: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	return spec.Annotations, nil
}
