package policy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/ckpt-dev/ckpt/runtime/container"
	"github.com/containerd/errdefs"
)

// AnnotationPrefix starts the container annotations that set the
// checkpoint defaults, e.g. `docker run --annotation
// io.ckpt.checkpoint.tcp-established=true`. The keys are those of
// annotationSetters.
const AnnotationPrefix = "io.ckpt.checkpoint."

// CRIContainerTypeAnnotation marks a container that containerd's CRI
// plugin created.
const CRIContainerTypeAnnotation = "io.kubernetes.cri.container-type"

// maxConfigSize caps a runtime config file (it holds a few flags).
const maxConfigSize = 64 << 10

// Defaults are the CRIU options of a checkpoint whose client sent none.
// Docker sends none to any runtime but io.containerd.runc.v2, not even
// `--leave-running`, so these are the only way to choose. The zero value
// is Docker's own default: the container exits.
//
// Sources, later ones winning: the runtime config (Config), in this JSON
// form; then the container's io.ckpt.checkpoint.* annotations.
type Defaults struct {
	LeaveRunning   bool   `json:"leave_running,omitempty"`
	TCPEstablished bool   `json:"tcp_established,omitempty"`
	ExtUnixSK      bool   `json:"ext_unix_sk,omitempty"`
	FileLocks      bool   `json:"file_locks,omitempty"`
	CgroupsMode    string `json:"cgroups_mode,omitempty"`
}

// Config is a runtime's checkpoint config: Body (containerd's ConfigBody)
// or, if empty, the file at Path (ConfigPath, absolute). Both empty: none.
type Config struct {
	Body []byte
	Path string
}

// Resolve decides a container's defaults from its runtime config and its
// annotations. A mistake is an invalid argument naming its source: a
// misspelt option must not silently become "stop the container".
func Resolve(cfg Config, annotations map[string]string) (Defaults, error) {
	var d Defaults
	if err := d.applyConfig(cfg); err != nil {
		return d, err
	}
	// containerd's CRI plugin (kubelet's checkpoint API) sends options only
	// to runc's shim, and expects the container to keep running: a
	// forensic checkpoint must not stop a pod's container.
	if _, cri := annotations[CRIContainerTypeAnnotation]; cri {
		d.LeaveRunning = true
	}
	if err := d.applyAnnotations(annotations); err != nil {
		return d, err
	}
	if !slices.Contains(validCgroupsModes, d.CgroupsMode) {
		return d, fmt.Errorf("checkpoint defaults: cgroups mode %q: want one of soft, full, strict, ignore, default: %w", d.CgroupsMode, errdefs.ErrInvalidArgument)
	}
	return d, nil
}

// Options are the defaults as checkpoint options. The network namespace
// is the caller's decision (see ForSilentClient).
func (d Defaults) Options() container.CheckpointOptions {
	return container.CheckpointOptions{
		LeaveRunning:   d.LeaveRunning,
		TCPEstablished: d.TCPEstablished,
		ExtUnixSK:      d.ExtUnixSK,
		FileLocks:      d.FileLocks,
		CgroupsMode:    d.CgroupsMode,
	}
}

// ForSilentClient are the options of a checkpoint whose containerd client
// sent none: the defaults, with the network namespace dumped empty. A
// client that sends no options is Docker (or the CRI plugin), which wires
// the container's network itself after Create (and CRIU could not restore
// Docker's veth, whose peer lives outside the container).
func ForSilentClient(d Defaults) container.CheckpointOptions {
	o := d.Options()
	o.EmptyNetNS = true
	return o
}

// validCgroupsModes are CRIU's manage-cgroups modes ("" is CRIU's default).
var validCgroupsModes = []string{"", "default", "soft", "full", "strict", "ignore"}

// annotationSetters maps an annotation key (after the prefix) to the
// default it sets.
var annotationSetters = map[string]func(d *Defaults, v string) error{
	"leave-running":   boolSetting(func(d *Defaults) *bool { return &d.LeaveRunning }),
	"tcp-established": boolSetting(func(d *Defaults) *bool { return &d.TCPEstablished }),
	"ext-unix-sk":     boolSetting(func(d *Defaults) *bool { return &d.ExtUnixSK }),
	"file-locks":      boolSetting(func(d *Defaults) *bool { return &d.FileLocks }),
	"cgroups-mode": func(d *Defaults, v string) error {
		d.CgroupsMode = v
		return nil
	},
}

func boolSetting(field func(*Defaults) *bool) func(*Defaults, string) error {
	return func(d *Defaults, v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("%q is not a boolean", v)
		}
		*field(d) = b
		return nil
	}
}

func (d *Defaults) applyAnnotations(annotations map[string]string) error {
	keys := make([]string, 0, len(annotations))
	for k := range annotations {
		keys = append(keys, k)
	}
	// Sorted, so that of several mistakes the same one is reported.
	slices.Sort(keys)
	for _, k := range keys {
		name, ok := strings.CutPrefix(k, AnnotationPrefix)
		if !ok {
			continue
		}
		set, known := annotationSetters[name]
		if !known {
			return fmt.Errorf("annotation %s: unknown checkpoint option (known: leave-running, tcp-established, ext-unix-sk, file-locks, cgroups-mode): %w", k, errdefs.ErrInvalidArgument)
		}
		if err := set(d, annotations[k]); err != nil {
			return fmt.Errorf("annotation %s: %w: %w", k, err, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

func (d *Defaults) applyConfig(cfg Config) error {
	body, source := cfg.Body, "the runtime options' ConfigBody"
	if len(body) == 0 && cfg.Path != "" {
		var err error
		if body, err = readConfigFile(cfg.Path); err != nil {
			return err
		}
		source = cfg.Path
	}
	if len(body) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(d); err != nil {
		return fmt.Errorf("checkpoint defaults in %s: %w: %w", source, err, errdefs.ErrInvalidArgument)
	}
	return nil
}

func readConfigFile(path string) ([]byte, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("runtime options: ConfigPath %q is not absolute: %w", path, errdefs.ErrInvalidArgument)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("runtime options: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("runtime options: read %s: %w", path, err)
	}
	if len(data) > maxConfigSize {
		return nil, fmt.Errorf("runtime options: %s is larger than %d bytes: %w", path, maxConfigSize, errdefs.ErrInvalidArgument)
	}
	return data, nil
}

// Overrides are what a client said explicitly (`ckpt checkpoint`'s flags);
// nil: not said, the container's default holds.
type Overrides struct {
	LeaveRunning, TCPEstablished, ExtUnixSK, ShellJob, FileLocks, EmptyNetNS *bool
	CgroupsMode                                                              *string
}

// With are the defaults' options with the client's overrides applied. The
// network namespace is dumped with its contents unless the client says
// otherwise: a client that says anything is not the silent one
// ForSilentClient is for.
func (d Defaults) With(o Overrides) container.CheckpointOptions {
	opts := d.Options()
	for _, b := range []struct {
		dst *bool
		src *bool
	}{
		{&opts.LeaveRunning, o.LeaveRunning}, {&opts.TCPEstablished, o.TCPEstablished},
		{&opts.ExtUnixSK, o.ExtUnixSK}, {&opts.ShellJob, o.ShellJob},
		{&opts.FileLocks, o.FileLocks}, {&opts.EmptyNetNS, o.EmptyNetNS},
	} {
		if b.src != nil {
			*b.dst = *b.src
		}
	}
	if o.CgroupsMode != nil {
		opts.CgroupsMode = *o.CgroupsMode
	}
	return opts
}
