package cgroupfs

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/moby/sys/mountinfo"
)

func TestCgroupProcsIn(t *testing.T) {
	top := t.TempDir()
	mk := func(p string) string {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(top, p), 0o755); err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(top, p, "cgroup.procs")
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		return f
	}
	pids := mk("pids/system.slice/ctrd")
	mk("unified/shim")
	mk("pids/a") // for the "/ab" prefix case
	tests := []struct {
		name   string
		paths  map[string]string
		mounts []*mountinfo.Info
		want   string
	}{
		{
			name:   "v1 hierarchy mounted at its root",
			paths:  map[string]string{"pids": "/system.slice/ctrd"},
			mounts: []*mountinfo.Info{{Mountpoint: top + "/pids", Root: "/", FSType: "cgroup", VFSOptions: "rw,pids"}},
			want:   pids,
		},
		{
			name:   "v2 mounted from a subtree (a container's view)",
			paths:  map[string]string{"": "/docker/abc/shim"},
			mounts: []*mountinfo.Info{{Mountpoint: top + "/unified", Root: "/docker/abc", FSType: "cgroup2"}},
			want:   top + "/unified/shim/cgroup.procs",
		},
		{
			name:   "a mount root that is only a name prefix",
			paths:  map[string]string{"pids": "/ab"},
			mounts: []*mountinfo.Info{{Mountpoint: top + "/pids", Root: "/a", FSType: "cgroup", VFSOptions: "rw,pids"}},
		},
		{
			name:   "a path out of the cgroup namespace",
			paths:  map[string]string{"pids": "/../a"},
			mounts: []*mountinfo.Info{{Mountpoint: top + "/pids", Root: "/", FSType: "cgroup", VFSOptions: "rw,pids"}},
		},
		{
			name:   "another controller's hierarchy",
			paths:  map[string]string{"cpu": "/system.slice/ctrd"},
			mounts: []*mountinfo.Info{{Mountpoint: top + "/pids", Root: "/", FSType: "cgroup", VFSOptions: "rw,pids"}},
		},
	}
	for _, tt := range tests {
		got, err := cgroupProcsIn(tt.paths, tt.mounts)
		if tt.want == "" {
			if err == nil {
				t.Errorf("%s: found %s", tt.name, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%s: %q, %v; want %q", tt.name, got, err, tt.want)
		}
	}
}

// TestOwnCgroupProcs: the file the warm-up writes lists this process, so
// the write moves it nowhere.
func TestOwnCgroupProcs(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("CI: needs root (writes cgroup.procs)")
		}
		t.Skip("SKIPPED, NOT TESTED: needs root (writes cgroup.procs)")
	}
	procs, err := ownCgroupProcs()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(procs)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(strings.Fields(string(data)), strconv.Itoa(os.Getpid())) {
		t.Fatalf("%s does not list this process", procs)
	}
	before, _ := os.ReadFile("/proc/self/cgroup")
	WarmMigration()
	if after, _ := os.ReadFile("/proc/self/cgroup"); string(after) != string(before) {
		t.Fatalf("the warm-up moved this process:\n%s\nwas:\n%s", after, before)
	}
}
