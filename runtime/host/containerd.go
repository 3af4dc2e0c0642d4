package host

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// DefaultContainerdConfig is where containerd reads its config by default.
const DefaultContainerdConfig = "/etc/containerd/config.toml"

// runtimeType is ckpt's runtime type in containerd's config.
const runtimeType = "io.containerd.ckpt.v2"

// ContainerdCheck says which of ckpt's paths the containerd binary bin
// (containerd on PATH if "") can serve as configured by configPath: the
// Go client, ctr, nerdctl and Docker need only the shim; the CRI plugin
// (crictl, kubelet) needs a runtime handler of ckpt's type, CRIU enabled
// for a checkpoint, and for a restore a containerd that still restores
// through CreateContainer, with that switched on. Every item is
// optional: they tell what cannot work, they do not fail the host.
func ContainerdCheck(ctx context.Context, bin, configPath string) []Item {
	if bin == "" {
		bin = "containerd"
	}
	var version string
	p, err := exec.LookPath(bin)
	if err == nil {
		var out []byte
		if out, err = exec.CommandContext(ctx, p, "--version").Output(); err == nil {
			version = containerdVersion(string(out))
		}
	}
	if err != nil || version == "" {
		return []Item{{Name: "containerd", Optional: true, Reason: fmt.Sprintf("no containerd version from %s --version (%v): ckpt's shim needs containerd 2.x", bin, err)}}
	}
	cfg, err := os.ReadFile(configPath)
	if errors.Is(err, fs.ErrNotExist) {
		cfg, err = nil, nil // containerd's defaults
	}
	return containerdItems(version, p, configPath, cfg, err)
}

// containerdVersion picks the version out of `containerd --version`
// ("containerd github.com/containerd/containerd/v2 v2.4.2 <commit>").
func containerdVersion(out string) string {
	for _, f := range strings.Fields(out) {
		if len(f) > 1 && f[0] == 'v' && f[1] >= '0' && f[1] <= '9' {
			return f
		}
	}
	return ""
}

// majorMinor reads "v2.4.2" as 2, 4.
func majorMinor(v string) (int, int, bool) {
	f := strings.SplitN(strings.TrimPrefix(v, "v"), ".", 3)
	if len(f) < 2 {
		return 0, 0, false
	}
	major, err1 := strconv.Atoi(f[0])
	minor, err2 := strconv.Atoi(f[1])
	return major, minor, err1 == nil && err2 == nil
}

// criConfig is what of containerd's config decides the CRI paths.
type criConfig struct {
	disabled    bool     // the CRI plugin is in disabled_plugins
	handlers    []string // runtime handlers of ckpt's type
	criu        bool     // enable_criu
	restoreKnob bool     // enable_experimental_restore_via_create
}

// containerdItems is ContainerdCheck once the version and config are
// read (cfg nil: no config file, containerd's defaults).
func containerdItems(version, bin, configPath string, cfg []byte, cfgErr error) []Item {
	items := []Item{{Name: "containerd", OK: true, Optional: true, Value: fmt.Sprintf("%s at %s", version, bin)}}
	major, minor, ok := majorMinor(version)
	if !ok || major < 2 {
		items[0].OK = false
		items[0].Reason = fmt.Sprintf("containerd %s: ckpt's shim needs containerd 2.x", version)
		return items
	}
	if cfgErr != nil {
		return append(items, Item{Name: "containerd config", Optional: true, Reason: fmt.Sprintf("%s: %v", configPath, cfgErr)})
	}
	c, err := parseCRIConfig(cfg)
	if err != nil {
		return append(items, Item{Name: "containerd config", Optional: true, Reason: fmt.Sprintf("%s: %v", configPath, err)})
	}
	const name = "CRI (crictl, kubelet)"
	switch {
	case c.disabled:
		return append(items, Item{Name: name, OK: true, Optional: true, Value: "CRI plugin disabled: not used"})
	case len(c.handlers) == 0:
		return append(items, Item{Name: name, Optional: true, Reason: fmt.Sprintf(
			"no CRI runtime handler has runtime_type %s in %s: pods cannot run on ckpt (add [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.ckpt] runtime_type = '%s')",
			runtimeType, configPath, runtimeType)})
	}
	items = append(items, Item{Name: name, OK: true, Optional: true, Value: "runtime handlers " + strings.Join(c.handlers, ", ")})
	if !c.criu {
		items = append(items, Item{Name: "CRI checkpoint", Optional: true,
			Reason: "enable_criu = false: the CRI plugin refuses CheckpointContainer (crictl checkpoint, kubelet's checkpoint API)"})
	} else {
		items = append(items, Item{Name: "CRI checkpoint", OK: true, Optional: true, Value: "crictl checkpoint --export, kubelet's checkpoint API"})
	}
	restore := Item{Name: "CRI restore", Optional: true}
	switch {
	case major > 2 || minor >= 4:
		restore.Reason = fmt.Sprintf("containerd %s has no restore through CreateContainer (removed in 2.4, containerd #13871): "+
			"crictl and kubelet cannot restore a CRI checkpoint here (use containerd 2.2 or 2.3 for that); "+
			"checkpoint and restore through ctr, the Go client, nerdctl and Docker are unaffected", version)
	case !c.restoreKnob:
		restore.Reason = "enable_experimental_restore_via_create is not true: CreateContainer with a checkpoint archive as image fails; set it under [plugins.'io.containerd.cri.v1.runtime'] (containerd 2.2.7+, 2.3.4+)"
	default:
		restore.OK = true
		restore.Value = "crictl create with the archive as image, then start"
	}
	return append(items, restore)
}

// parseCRIConfig reads the CRI plugin's settings from a version 2 or 3
// config; nil is containerd's defaults (CRI on, CRIU on, no ckpt handler).
func parseCRIConfig(cfg []byte) (criConfig, error) {
	c := criConfig{criu: true}
	var doc struct {
		Version         int            `toml:"version"`
		DisabledPlugins []string       `toml:"disabled_plugins"`
		Plugins         map[string]any `toml:"plugins"`
	}
	if err := toml.Unmarshal(cfg, &doc); err != nil {
		return c, err
	}
	// The runtime part of the CRI plugin: its own plugin in version 3,
	// part of io.containerd.grpc.v1.cri in version 2.
	plugin := "io.containerd.cri.v1.runtime"
	if doc.Version < 3 {
		plugin = "io.containerd.grpc.v1.cri"
	}
	c.disabled = slices.Contains(doc.DisabledPlugins, plugin) || slices.Contains(doc.DisabledPlugins, "io.containerd.grpc.v1.cri")
	rt, _ := doc.Plugins[plugin].(map[string]any)
	if v, ok := rt["enable_criu"].(bool); ok {
		c.criu = v
	}
	if v, ok := rt["enable_experimental_restore_via_create"].(bool); ok {
		c.restoreKnob = v
	}
	ctrd, _ := rt["containerd"].(map[string]any)
	runtimes, _ := ctrd["runtimes"].(map[string]any)
	for name, r := range runtimes {
		if m, ok := r.(map[string]any); ok && m["runtime_type"] == runtimeType {
			c.handlers = append(c.handlers, name)
		}
	}
	slices.Sort(c.handlers)
	return c, nil
}
