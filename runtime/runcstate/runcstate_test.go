package runcstate

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/ckpt-dev/ckpt/runtime/bootcache"
	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestValidateID(t *testing.T) {
	for _, ok := range []string{"a", "c-1_2.3+4", "ABC"} {
		if err := ValidateID(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", "a/b", "../x", "a b", "x\x00"} {
		if ValidateID(bad) == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestSaveLoad(t *testing.T) {
	root := t.TempDir()
	dir, err := Dir(root, "c1")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := Load(root, "c1"); !errors.Is(err, ErrNotExist) {
		t.Fatalf("missing state: %v", err)
	}
	os.Mkdir(dir, 0o711)
	cfg := configs.Config{Rootfs: "/r", Cgroups: &cgroups.Cgroup{Name: "c1"}, Namespaces: configs.Namespaces{{Type: configs.NEWPID}}}
	st := &libcontainer.State{
		BaseState:   libcontainer.BaseState{ID: "c1", InitProcessPid: 42, InitProcessStartTime: 7, Created: time.Now().UTC(), Config: cfg},
		CgroupPaths: map[string]string{"cpu": "/sys/fs/cgroup/cpu/c1"},
	}
	if err := Save(dir, st); err != nil {
		t.Fatal(err)
	}
	got, gotDir, err := Load(root, "c1")
	if err != nil || gotDir != dir || got.InitProcessPid != 42 || got.CgroupPaths["cpu"] == "" {
		t.Fatalf("%+v %s %v", got, gotDir, err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("temp files left: %v", entries)
	}
}

func TestNamespacePaths(t *testing.T) {
	cfg := &configs.Config{Namespaces: configs.Namespaces{{Type: configs.NEWPID}, {Type: configs.NEWNET, Path: "/run/netns/x"}}}
	p := NamespacePaths(cfg, 42)
	// As runc: the init's own links, also for joined namespaces, and every
	// supported type.
	if p[configs.NEWPID] != "/proc/42/ns/pid" || p[configs.NEWNET] != "/proc/42/ns/net" || p[configs.NEWNS] != "/proc/42/ns/mnt" {
		t.Errorf("%v", p)
	}
}

func TestConfigFromSpec(t *testing.T) {
	bundle := t.TempDir()
	os.MkdirAll(filepath.Join(bundle, "rootfs"), 0o755)
	spec := specconv.Example()
	spec.Mounts = append(spec.Mounts, specs.Mount{Destination: "/data", Source: "data", Options: []string{"bind"}})
	cfg, err := Config(bundle, spec, "c1")
	if err != nil {
		t.Fatal(err)
	}
	real, _ := filepath.EvalSymlinks(bundle)
	if cfg.Rootfs != filepath.Join(real, "rootfs") || BundleOf(cfg) != real {
		t.Errorf("rootfs %s bundle %s", cfg.Rootfs, BundleOf(cfg))
	}
	last := cfg.Mounts[len(cfg.Mounts)-1]
	if last.Device != "bind" || last.Source != filepath.Join(real, "data") {
		t.Errorf("bind mount %+v", last)
	}
	if spec.Root.Path != "rootfs" || spec.Mounts[len(spec.Mounts)-1].Source != "data" {
		t.Error("the caller's spec was modified")
	}
}

// TestPinnedVersionMatchesGoMod keeps the fallback equal to go.mod's runc.
func TestPinnedVersionMatchesGoMod(t *testing.T) {
	data, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Skip("go.mod not found")
	}
	m := regexp.MustCompile(`github.com/opencontainers/runc v(\S+)`).FindSubmatch(data)
	if m == nil {
		t.Fatal("runc not in go.mod")
	}
	if got := PinnedVersion(); got != string(m[1]) || fallbackVersion != string(m[1]) {
		t.Errorf("pinned %s, fallback %s, go.mod %s", got, fallbackVersion, m[1])
	}
	if _, ok := debug.ReadBuildInfo(); !ok {
		t.Log("no build info")
	}
}

func TestCheckVersion(t *testing.T) {
	dir := t.TempDir()
	useVersionCache(t, dir)
	calls := filepath.Join(dir, "calls")
	fake := func(version string) string {
		p := filepath.Join(dir, "runc-"+version)
		os.WriteFile(p, []byte("#!/bin/sh\necho x >> "+calls+"\necho 'runc version "+version+"'\necho 'commit: x'\necho 'spec: 1.3.0'\n"), 0o755)
		return p
	}
	if err := CheckVersion(context.Background(), fake(PinnedVersion())); err != nil {
		t.Errorf("pinned version refused: %v", err)
	}
	err := CheckVersion(context.Background(), fake("1.1.0"))
	var ve *VersionError
	if !errors.As(err, &ve) || ve.Installed != "1.1.0" || !strings.Contains(err.Error(), "1.1.0") || !strings.Contains(err.Error(), PinnedVersion()) {
		t.Errorf("wrong version: %v", err)
	}
	if err := CheckVersion(context.Background(), filepath.Join(dir, "missing")); err == nil {
		t.Error("missing runc accepted")
	}

	// Asked once per binary: not again in this process, nor in the next
	// one (the file), but again once the binary is replaced.
	os.Remove(calls)
	pinned := fake(PinnedVersion())
	for i := 0; i < 2; i++ {
		if err := CheckVersion(context.Background(), pinned); err != nil {
			t.Fatal(err)
		}
		versionCache.Forget()
	}
	if n := strings.Count(readFile(t, calls), "x"); n != 1 {
		t.Errorf("runc --version ran %d times, want 1", n)
	}
	os.WriteFile(pinned, []byte("#!/bin/sh\necho 'runc version 1.1.0'\n"), 0o755)
	if err := CheckVersion(context.Background(), pinned); !errors.As(err, &ve) {
		t.Errorf("a replaced runc was not asked again: %v", err)
	}
}

// useVersionCache points the version cache at dir, for this test.
func useVersionCache(t *testing.T, dir string) {
	t.Helper()
	boot := filepath.Join(dir, "boot_id")
	os.WriteFile(boot, []byte("b1\n"), 0o644)
	old := versionCache
	versionCache = &bootcache.Cache[string]{File: filepath.Join(dir, "runc-version.json"), BootIDFile: boot}
	t.Cleanup(func() { versionCache = old })
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
