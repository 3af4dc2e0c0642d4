package plan

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/ckpt-dev/ckpt/runtime/image"
	"github.com/ckpt-dev/ckpt/runtime/runcstate"
	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// TestPlansFromSpec builds both plans from `runc spec`'s default spec plus
// a relative bind mount, through runc's own spec conversion.
func TestPlansFromSpec(t *testing.T) {
	bundle := t.TempDir()
	if err := os.MkdirAll(filepath.Join(bundle, "rootfs"), 0o755); err != nil {
		t.Fatal(err)
	}
	spec := specconv.Example()
	spec.Mounts = append(spec.Mounts, specs.Mount{Destination: "/data", Source: "data", Type: "none", Options: []string{"rbind", "ro"}})
	spec.Linux.Namespaces = append(spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: "/run/netns/ckpt-test"})
	spec.Linux.Namespaces = dedupNet(spec.Linux.Namespaces)
	cfg, err := runcstate.Config(bundle, spec, "c1")
	if err != nil {
		t.Fatal(err)
	}
	real, _ := filepath.EvalSymlinks(bundle)

	cp := &Checkpoint{
		Config: cfg, InitPid: 1, WorkDirFd: -1, CgroupV1Hierarchies: []string{"memory"},
		MaskedFiles: []string{"/proc/kcore"}, Caps: allCaps, Options: Normalize(cfg, image.Options{EmptyNetNS: true}),
		NsInodes: map[configs.NamespaceType]uint64{configs.NEWNET: 99},
	}
	o, err := cp.Opts()
	if err != nil {
		t.Fatal(err)
	}
	m := extMnts(o)
	if m["/data"] != "/data" || m["/proc/kcore"] != "/dev/null" || m["/sys/fs/cgroup/memory"] != "/sys/fs/cgroup/memory" || m["/dev/null"] != "/dev/null" {
		t.Errorf("checkpoint ext mounts %v", m)
	}
	if o.EmptyNs != nil || len(o.External) != 1 || o.External[0] != "net[99]:extRootNetNS" {
		t.Errorf("netns: empty %v external %v", o.EmptyNs, o.External)
	}

	rp := &Restore{
		Config: cfg, Root: "/r", WorkDirFd: -1, Caps: allCaps, Options: cp.Options,
		Descriptors: []string{"/dev/null", "/dev/null", "/dev/null"},
		NsFds:       map[configs.NamespaceType]int32{configs.NEWNET: 4},
	}
	o, err = rp.Opts()
	if err != nil {
		t.Fatal(err)
	}
	if got := extMnts(o)["/data"]; got != filepath.Join(real, "data") {
		t.Errorf("restore bind source %q, want the bundle's data dir", got)
	}
}

func dedupNet(ns []specs.LinuxNamespace) []specs.LinuxNamespace {
	var out []specs.LinuxNamespace
	for _, n := range ns {
		if n.Type == specs.NetworkNamespace && n.Path == "" {
			continue
		}
		out = append(out, n)
	}
	return out
}
