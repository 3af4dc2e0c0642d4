package shim

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/ckpt-dev/ckpt/runtime/policy"
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// RuncRoot is where runc keeps the state of ckpt's containers, one dir per
// containerd namespace (containerd's runc shim uses /run/containerd/runc).
const RuncRoot = "/run/containerd/ckpt"

// runtimeFile records, in the bundle, how the shim ran runc, for the
// cleanup that `shim delete` does after a crash.
const runtimeFile = "ckpt-runtime.json"

type runtimeConfig struct {
	Root          string `json:"root"`
	Binary        string `json:"binary,omitempty"`
	SystemdCgroup bool   `json:"systemd_cgroup,omitempty"`
}

func runtimeConfigOf(ns string, opts *options.Options) runtimeConfig {
	root := RuncRoot
	if opts.Root != "" {
		root = opts.Root
	}
	return runtimeConfig{Root: filepath.Join(root, ns), Binary: opts.BinaryName, SystemdCgroup: opts.SystemdCgroup}
}

func (rc runtimeConfig) write(bundle string) error {
	data, err := json.Marshal(rc)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(bundle, runtimeFile), data, 0o600)
}

func readRuntimeConfig(bundle string) (runtimeConfig, error) {
	var rc runtimeConfig
	data, err := os.ReadFile(filepath.Join(bundle, runtimeFile))
	if err != nil {
		return rc, err
	}
	return rc, json.Unmarshal(data, &rc)
}

// newRunc is go-runc for one bundle: runc's log in the bundle, in JSON so
// that runtimeError can quote it; SIGKILL if the shim dies mid-call.
func (rc runtimeConfig) newRunc(bundle string) *runc.Runc {
	cmd := rc.Binary
	if cmd == "" {
		cmd = runc.DefaultCommand
	}
	return &runc.Runc{
		Command:       cmd,
		Root:          rc.Root,
		Log:           filepath.Join(bundle, "log.json"),
		LogFormat:     runc.JSON,
		PdeathSignal:  syscall.SIGKILL,
		SystemdCgroup: rc.SystemdCgroup,
	}
}

// runtimeError adds runc's own last error message (from its JSON log) to a
// failed runc call: go-runc only reports the exit status when the call's
// stdio belongs to the container.
func runtimeError(r *runc.Runc, err error, what string) error {
	if err == nil {
		return nil
	}
	if msg := lastRuncError(r.Log); msg != "" && !strings.Contains(err.Error(), msg) {
		return fmt.Errorf("%s: %s: %w", what, msg, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func lastRuncError(logFile string) string {
	f, err := os.Open(logFile)
	if err != nil {
		return ""
	}
	defer f.Close()
	var last string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		var entry struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
		}
		if json.Unmarshal(sc.Bytes(), &entry) == nil && entry.Level == "error" {
			last = entry.Msg
		}
	}
	return last
}

// notExist reports runc's "container does not exist" (state already gone,
// e.g. deleted by a checkpoint that stopped the container).
func notExist(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "does not exist") || strings.Contains(err.Error(), "not exist"))
}

// notRunning reports runc refusing to signal a container that is gone.
func notRunning(err error) bool {
	if err == nil {
		return false
	}
	msg := err.Error()
	return strings.Contains(msg, "not running") || strings.Contains(msg, "process already finished") ||
		strings.Contains(msg, "no such process") || notExist(err)
}

// deleteContainer removes runc's state; a container runc no longer knows
// is fine.
func deleteContainer(ctx context.Context, r *runc.Runc, id string, force bool) error {
	err := r.Delete(ctx, id, &runc.DeleteOpts{Force: force})
	if err == nil || notExist(err) {
		return nil
	}
	return runtimeError(r, err, "runc delete")
}

// specFacts are what the shim reads from a bundle's config.json.
type specFacts struct {
	// ownPidNS: the container gets a pid namespace of its own.
	ownPidNS bool
	// madeByCRI: containerd's CRI plugin created the container.
	madeByCRI bool
}

func readSpecFacts(bundle string) (specFacts, error) {
	var f specFacts
	data, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return f, err
	}
	var spec specs.Spec
	if err := json.Unmarshal(data, &spec); err != nil {
		return f, fmt.Errorf("config.json: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	_, f.madeByCRI = spec.Annotations[policy.CRIContainerTypeAnnotation]
	if spec.Linux != nil {
		for _, ns := range spec.Linux.Namespaces {
			if ns.Type == specs.PIDNamespace {
				f.ownPidNS = ns.Path == ""
			}
		}
	}
	return f, nil
}
