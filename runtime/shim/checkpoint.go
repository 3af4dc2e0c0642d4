package shim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ckpt-dev/ckpt/runtime/image"
	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types/runc/options"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/log"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"
)

// Checkpoint dumps the container into r.Path. containerd's client pauses
// the task first, so the container is usually frozen here.
func (s *service) Checkpoint(ctx context.Context, r *taskAPI.CheckpointTaskRequest) (*emptypb.Empty, error) {
	c, err := s.container(r.ID)
	if err != nil {
		return nil, toGRPC(err)
	}
	if s.engine == nil {
		return nil, toGRPC(fmt.Errorf("checkpoint: this shim has no checkpoint/restore engine: %w", errdefs.ErrNotImplemented))
	}
	opts, err := requestedOptions(r.Options, c.bundle)
	if err != nil {
		return nil, toGRPC(err)
	}
	path := r.Path
	if path == "" {
		path = opts.ImagePath
	}
	if path == "" {
		return nil, toGRPC(fmt.Errorf("checkpoint: no image path: %w", errdefs.ErrInvalidArgument))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.init.Status(); st != task.Status_RUNNING && st != task.Status_PAUSED {
		return nil, toGRPC(fmt.Errorf("checkpoint: task %q is %s: %w", c.id, st, errdefs.ErrFailedPrecondition))
	}
	req := checkpointRequest(opts, path, workDir(c.bundle, opts.WorkPath))
	req.Root, req.ID, req.Runc = c.runc.Root, c.id, c.runc.Command
	// A terminal's pty is outside the container: CRIU needs shell-job
	// whether or not the client said so (Docker never does).
	req.ShellJob = req.ShellJob || c.init.stdio.Terminal
	req.WindowSize = c.init.windowSize()
	err = s.engine.Checkpoint(ctx, req)
	releaseMemory()
	keepLog(req.WorkPath, "dump.log", c.bundle, "criu-dump.log")
	if err != nil {
		s.resyncPaused(ctx, c)
		return nil, toGRPC(fmt.Errorf("checkpoint of %q (CRIU log: %s/criu-dump.log): %w", c.id, c.bundle, err))
	}
	if err := stampArchive(path); err != nil {
		log.G(ctx).WithError(err).Warn("stamp the checkpoint against Docker's re-upload collision")
	}
	log.G(ctx).WithField("id", c.id).WithField("path", path).WithField("exit", !req.LeaveRunning).Info("task checkpointed")
	s.send(&eventstypes.TaskCheckpointed{ContainerID: c.id, Checkpoint: path})
	return empty, nil
}

// requestedOptions are the client's options or, when it sent none (Docker
// with a runtime other than runc cannot send any), the container's
// checkpoint defaults.
func requestedOptions(a *anypb.Any, bundle string) (*options.CheckpointOptions, error) {
	if a != nil && a.GetTypeUrl() != "" {
		return checkpointOptions(a)
	}
	d, err := loadCheckpointDefaults(bundle)
	if err != nil {
		return nil, err
	}
	return d.options(), nil
}

// checkpointOptions reads containerd's runc CheckpointOptions, the only
// type containerd accepts; none at all are the zero checkpointDefaults.
func checkpointOptions(a *anypb.Any) (*options.CheckpointOptions, error) {
	if a == nil || a.GetTypeUrl() == "" {
		return checkpointDefaults{}.options(), nil
	}
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

// checkpointRequest maps containerd's options to CRIU's.
func checkpointRequest(opts *options.CheckpointOptions, path, work string) CheckpointRequest {
	return CheckpointRequest{
		ImagePath:      path,
		WorkPath:       work,
		LeaveRunning:   !opts.Exit,
		TCPEstablished: opts.OpenTcp,
		ExtUnixSK:      opts.ExternalUnixSockets,
		ShellJob:       opts.Terminal,
		FileLocks:      opts.FileLocks,
		EmptyNetNS:     slices.Contains(opts.EmptyNamespaces, "network"),
		CgroupsMode:    opts.CgroupsMode,
		Monitor:        runc.Monitor,
	}
}

// CheckpointAnnotationPrefix starts the container annotations that set
// the checkpoint defaults, e.g. `docker run --annotation
// io.ckpt.checkpoint.tcp-established=true`. The keys are those of
// checkpointAnnotations.
const CheckpointAnnotationPrefix = "io.ckpt.checkpoint."

// criContainerTypeAnnotation marks a container that containerd's CRI
// plugin created.
const criContainerTypeAnnotation = "io.kubernetes.cri.container-type"

// checkpointDefaultsFile keeps, in the bundle, the defaults resolved when
// the task was created.
const checkpointDefaultsFile = "ckpt-checkpoint.json"

// maxConfigSize caps a checkpoint defaults file (it holds a few flags).
const maxConfigSize = 64 << 10

// checkpointDefaults are the CRIU options of a checkpoint whose client
// sent none. Docker sends none to any runtime but io.containerd.runc.v2,
// not even `--leave-running`, so these are the only way to choose. The
// zero value is Docker's own default: the container exits.
//
// Sources, later ones winning: the file named by the runtime options'
// ConfigPath (daemon.json: "options": {"ConfigPath": "/etc/ckpt/x.json"}),
// or their ConfigBody, in this JSON form; then the container's
// io.ckpt.checkpoint.* annotations.
type checkpointDefaults struct {
	LeaveRunning   bool   `json:"leave_running,omitempty"`
	TCPEstablished bool   `json:"tcp_established,omitempty"`
	ExtUnixSK      bool   `json:"ext_unix_sk,omitempty"`
	FileLocks      bool   `json:"file_locks,omitempty"`
	CgroupsMode    string `json:"cgroups_mode,omitempty"`
}

// options are the defaults as containerd's options. The network namespace
// is always dumped empty: a client that sends no options is Docker, which
// wires the container's network itself after Create (and CRIU could not
// restore Docker's veth, whose peer lives outside the container).
func (d checkpointDefaults) options() *options.CheckpointOptions {
	return &options.CheckpointOptions{
		Exit:                !d.LeaveRunning,
		OpenTcp:             d.TCPEstablished,
		ExternalUnixSockets: d.ExtUnixSK,
		FileLocks:           d.FileLocks,
		EmptyNamespaces:     []string{"network"},
		CgroupsMode:         d.CgroupsMode,
	}
}

// checkpointAnnotations maps an annotation key (after the prefix) to the
// default it sets.
var checkpointAnnotations = map[string]func(d *checkpointDefaults, v string) error{
	"leave-running":   boolSetting(func(d *checkpointDefaults) *bool { return &d.LeaveRunning }),
	"tcp-established": boolSetting(func(d *checkpointDefaults) *bool { return &d.TCPEstablished }),
	"ext-unix-sk":     boolSetting(func(d *checkpointDefaults) *bool { return &d.ExtUnixSK }),
	"file-locks":      boolSetting(func(d *checkpointDefaults) *bool { return &d.FileLocks }),
	"cgroups-mode": func(d *checkpointDefaults, v string) error {
		d.CgroupsMode = v
		return nil
	},
}

func boolSetting(field func(*checkpointDefaults) *bool) func(*checkpointDefaults, string) error {
	return func(d *checkpointDefaults, v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("%q is not a boolean", v)
		}
		*field(d) = b
		return nil
	}
}

// validCgroupsModes are CRIU's manage-cgroups modes ("" is CRIU's default).
var validCgroupsModes = []string{"", "default", "soft", "full", "strict", "ignore"}

func (d checkpointDefaults) validate() error {
	if !slices.Contains(validCgroupsModes, d.CgroupsMode) {
		return fmt.Errorf("cgroups mode %q: want one of soft, full, strict, ignore, default", d.CgroupsMode)
	}
	return nil
}

// saveCheckpointDefaults resolves the checkpoint defaults of a task being
// created, from the runtime options containerd passed (Docker's
// runtimeoptions for a runtime configured with "options") and the
// bundle's annotations, and keeps them in the bundle. A mistake fails the
// create, where the user sees it, not a later checkpoint.
func saveCheckpointDefaults(bundle string, runtimeOpts *anypb.Any) error {
	d, err := resolveCheckpointDefaults(bundle, runtimeOpts)
	if err != nil {
		return err
	}
	data, err := json.Marshal(d)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(bundle, checkpointDefaultsFile), data, 0o600)
}

// loadCheckpointDefaults reads what saveCheckpointDefaults kept; a bundle
// without it (a task created by an older shim) gets its annotations only.
func loadCheckpointDefaults(bundle string) (checkpointDefaults, error) {
	var d checkpointDefaults
	data, err := os.ReadFile(filepath.Join(bundle, checkpointDefaultsFile))
	if os.IsNotExist(err) {
		return resolveCheckpointDefaults(bundle, nil)
	}
	if err != nil {
		return d, err
	}
	if err := json.Unmarshal(data, &d); err != nil {
		return d, fmt.Errorf("%s: %w", checkpointDefaultsFile, err)
	}
	return d, nil
}

func resolveCheckpointDefaults(bundle string, runtimeOpts *anypb.Any) (checkpointDefaults, error) {
	var d checkpointDefaults
	if err := applyRuntimeConfig(&d, runtimeOpts); err != nil {
		return d, err
	}
	annotations, err := readAnnotations(filepath.Join(bundle, "config.json"))
	if err != nil {
		return d, err
	}
	// containerd's CRI plugin (kubelet's checkpoint API) sends options only
	// to runc's shim, and expects the container to keep running: a
	// forensic checkpoint must not stop a pod's container.
	if _, cri := annotations[criContainerTypeAnnotation]; cri {
		d.LeaveRunning = true
	}
	if err := applyAnnotations(&d, annotations); err != nil {
		return d, err
	}
	if err := d.validate(); err != nil {
		return d, fmt.Errorf("checkpoint defaults: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	return d, nil
}

// applyRuntimeConfig reads the defaults from runtimeoptions' ConfigBody
// or the file at ConfigPath. Other option types carry none.
func applyRuntimeConfig(d *checkpointDefaults, a *anypb.Any) error {
	ro := &runtimeoptions.Options{}
	if a == nil || !typeurl.Is(a, ro) {
		return nil
	}
	if err := typeurl.UnmarshalTo(a, ro); err != nil {
		return fmt.Errorf("runtime options: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	body, source := ro.ConfigBody, "the runtime options' ConfigBody"
	if len(body) == 0 && ro.ConfigPath != "" {
		var err error
		if body, err = readConfigFile(ro.ConfigPath); err != nil {
			return err
		}
		source = ro.ConfigPath
	}
	if len(body) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	// A misspelt option must not silently become "stop the container".
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

func readAnnotations(configJSON string) (map[string]string, error) {
	data, err := os.ReadFile(configJSON)
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

func applyAnnotations(d *checkpointDefaults, annotations map[string]string) error {
	keys := make([]string, 0, len(annotations))
	for k := range annotations {
		keys = append(keys, k)
	}
	// Sorted, so that of several mistakes the same one is reported.
	slices.Sort(keys)
	for _, k := range keys {
		name, ok := strings.CutPrefix(k, CheckpointAnnotationPrefix)
		if !ok {
			continue
		}
		set, known := checkpointAnnotations[name]
		if !known {
			return fmt.Errorf("annotation %s: unknown checkpoint option (known: leave-running, tcp-established, ext-unix-sk, file-locks, cgroups-mode): %w", k, errdefs.ErrInvalidArgument)
		}
		if err := set(d, annotations[k]); err != nil {
			return fmt.Errorf("annotation %s: %w: %w", k, err, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// archiveStamp is the mtime stampArchive gives ckpt.json: one second
// before 1970.
var archiveStamp = time.Unix(-1, 0)

// stampArchive makes the checkpoint's tar differ from any later re-tar of
// it. containerd stores a checkpoint as a tar of this dir; Docker extracts
// it into its own checkpoint dir and, on `docker start --checkpoint`,
// uploads a tar of that copy. The extraction keeps names, modes and
// (whole-second) mtimes, so that tar is byte-identical to the stored one,
// and Docker's upload fails with "content sha256:...: already exists"
// until containerd's garbage collector has removed the old blob. An mtime
// before 1970 is stored as it is, but containerd's extraction clamps it to
// 1970: the re-tar, and its digest, differ.
func stampArchive(dir string) error {
	p := filepath.Join(dir, image.MetadataFile)
	if _, err := os.Lstat(p); err != nil {
		return err
	}
	return os.Chtimes(p, archiveStamp, archiveStamp)
}

// resyncPaused corrects a paused task's status after a failed dump. CRIU
// thaws a frozen cgroup once it has seized the tasks (ptrace holds them)
// and freezes it again before it lets them go; a criu that dies in between
// leaves the container running. Left PAUSED, the client's Resume would be
// refused by runc ("container not paused") and the task reported paused
// for good.
func (s *service) resyncPaused(ctx context.Context, c *container) {
	if c.init.Status() != task.Status_PAUSED {
		return
	}
	st, err := c.runc.State(ctx, c.id)
	if err != nil || st.Status != "running" {
		return
	}
	log.G(ctx).WithField("id", c.id).Warn("the failed checkpoint left the paused container running (criu died before it froze it again)")
	c.init.setStatus(task.Status_RUNNING)
	s.send(&eventstypes.TaskResumed{ContainerID: c.id})
}
