package runcstate

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/configs/validate"
	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// maxSpecSize bounds config.json: a spec is a few KiB; a huge file is a
// mistake or an attack and is not read into memory.
const maxSpecSize = 4 << 20

// LoadSpec reads bundle/config.json and returns it with its raw bytes
// (the metadata records their digest).
func LoadSpec(bundle string) (*specs.Spec, []byte, error) {
	p := filepath.Join(bundle, "config.json")
	f, err := os.Open(p)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() || fi.Size() > maxSpecSize {
		return nil, nil, fmt.Errorf("%s: not a regular file of at most %d bytes", p, maxSpecSize)
	}
	data := make([]byte, fi.Size())
	if _, err := f.ReadAt(data, 0); err != nil {
		return nil, nil, err
	}
	var spec specs.Spec
	if err := json.Unmarshal(data, &spec); err != nil {
		return nil, nil, fmt.Errorf("parse %s: %w", p, err)
	}
	return &spec, data, nil
}

// BundleOf returns the bundle runc recorded in the config's labels.
func BundleOf(cfg *configs.Config) string {
	for _, l := range cfg.Labels {
		if b, ok := strings.CutPrefix(l, "bundle="); ok {
			return b
		}
	}
	return ""
}

// Config converts the bundle's spec into the libcontainer config runc
// itself would build for container id (runc create with default flags,
// cgroupfs driver, as root).
//
// runc builds it with its cwd in the bundle; a library must not chdir, so
// the relative paths specconv would resolve against the cwd (root path,
// bind sources) are made absolute here first, and the "bundle=" label is
// set to the bundle.
func Config(bundle string, spec *specs.Spec, id string) (*configs.Config, error) {
	abs, err := filepath.Abs(bundle)
	if err != nil {
		return nil, err
	}
	if abs, err = filepath.EvalSymlinks(abs); err != nil {
		return nil, err
	}
	if spec.Root == nil {
		return nil, errors.New("spec has no root")
	}
	s := *spec
	root := *spec.Root
	if !filepath.IsAbs(root.Path) {
		root.Path = filepath.Join(abs, root.Path)
	}
	s.Root = &root
	s.Mounts = slices.Clone(spec.Mounts)
	for i, m := range s.Mounts {
		if isBind(m) && m.Source != "" && !filepath.IsAbs(m.Source) {
			s.Mounts[i].Source = filepath.Join(abs, m.Source)
		}
	}
	cfg, err := specconv.CreateLibcontainerConfig(&specconv.CreateOpts{CgroupName: id, Spec: &s})
	if err != nil {
		return nil, fmt.Errorf("convert %s/config.json: %w", abs, err)
	}
	for i, l := range cfg.Labels {
		if strings.HasPrefix(l, "bundle=") {
			cfg.Labels[i] = "bundle=" + abs
		}
	}
	if err := validate.Validate(cfg); err != nil {
		return nil, fmt.Errorf("invalid container config from %s/config.json: %w", abs, err)
	}
	return cfg, nil
}

func isBind(m specs.Mount) bool {
	if m.Type == "bind" {
		return true
	}
	for _, o := range m.Options {
		if o == "bind" || o == "rbind" {
			return true
		}
	}
	return false
}
