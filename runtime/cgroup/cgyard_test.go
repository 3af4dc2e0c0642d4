package cgroup

import (
	"slices"
	"testing"

	"github.com/moby/sys/mountinfo"
	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/runc/libcontainer/configs"
)

// hybridMounts is a hybrid host's /sys/fs/cgroup with cpu,cpuacct
// comounted, as systemd lays it out.
func hybridMounts() []*mountinfo.Info {
	return []*mountinfo.Info{
		{Mountpoint: "/sys/fs/cgroup/cpu,cpuacct", Root: "/", FSType: "cgroup", VFSOptions: "rw,cpu,cpuacct"},
		{Mountpoint: "/sys/fs/cgroup/memory", Root: "/", FSType: "cgroup", VFSOptions: "rw,memory"},
		{Mountpoint: "/sys/fs/cgroup/systemd", Root: "/", FSType: "cgroup", VFSOptions: "rw,xattr,name=systemd"},
		{Mountpoint: "/sys/fs/cgroup/unified", Root: "/", FSType: "cgroup2", VFSOptions: "rw,nsdelegate"},
	}
}

const hybridProcCgroup = "4:memory:/a\n3:cpu,cpuacct:/a\n1:name=systemd:/a\n0::/a\n"

func TestYardNames(t *testing.T) {
	got := yardNames([]byte(hybridProcCgroup + "garbage\n"))
	want := []string{"memory", "cpu,cpuacct", "systemd", "unified"}
	if !slices.Equal(got, want) {
		t.Fatalf("yardNames = %q, want %q", got, want)
	}
}

func TestYardComplete(t *testing.T) {
	names := yardNames([]byte(hybridProcCgroup))
	tests := []struct {
		name   string
		mounts func() []*mountinfo.Info
		want   bool
	}{
		{"hybrid layout", hybridMounts, true},
		{"a hierarchy missing", func() []*mountinfo.Info { return hybridMounts()[1:] }, false},
		{"mounted elsewhere", func() []*mountinfo.Info {
			m := hybridMounts()
			m[1].Mountpoint = "/mnt/memory"
			return m
		}, false},
		{"a sub-cgroup bind-mounted, not the whole hierarchy", func() []*mountinfo.Info {
			m := hybridMounts()
			m[2].Root = "/docker/x"
			return m
		}, false},
		{"another hierarchy under the name", func() []*mountinfo.Info {
			m := hybridMounts()
			m[1].VFSOptions = "rw,pids"
			return m
		}, false},
		{"v1 where v2 is expected", func() []*mountinfo.Info {
			m := hybridMounts()
			m[3].FSType = "cgroup"
			return m
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := yardComplete("/sys/fs/cgroup", names, tt.mounts()); got != tt.want {
				t.Fatalf("yardComplete = %v, want %v", got, tt.want)
			}
		})
	}
	if yardComplete("/sys/fs/cgroup", nil, hybridMounts()) {
		t.Fatal("a yard for no hierarchy at all")
	}
}

func TestCgroupPathOf(t *testing.T) {
	mounts := append(hybridMounts(),
		&mountinfo.Info{Mountpoint: "/nested/memory", Root: "/outer", FSType: "cgroup", VFSOptions: "rw,memory"},
		&mountinfo.Info{Mountpoint: "/sys/fs/cgroup", Root: "/", FSType: "tmpfs"})
	tests := []struct {
		dir, ctrl, want string
		wantErr         bool
	}{
		{"/sys/fs/cgroup/cpu,cpuacct/ns/c1", "cpuacct", "/ns/c1", false},
		{"/sys/fs/cgroup/systemd/ns/c1", "name=systemd", "/ns/c1", false},
		{"/sys/fs/cgroup/unified/ns/c1", "", "/ns/c1", false},
		{"/sys/fs/cgroup/memory", "memory", "/", false},
		{"/nested/memory/c1", "memory", "/outer/c1", false},
		{"/sys/fs/cgroup/memory/c1", "pids", "", true},
		{"/sys/fs/cgroup/memoryx/c1", "memory", "", true},
	}
	for _, tt := range tests {
		got, err := cgroupPathOf(tt.dir, tt.ctrl, mounts)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("cgroupPathOf(%q, %q) = %q, %v; want %q (error %v)", tt.dir, tt.ctrl, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestCriuJoinsCgroup(t *testing.T) {
	systemd := &cgroups.Cgroup{Systemd: true}
	tests := []struct {
		name string
		cfg  *configs.Config
		mode string
		want bool
	}{
		{"cgroupfs driver, CRIU moves the tasks", &configs.Config{Cgroups: &cgroups.Cgroup{}}, "", false},
		{"cgroupfs driver, soft", &configs.Config{Cgroups: &cgroups.Cgroup{}}, "soft", false},
		{"ignore: CRIU moves nothing", &configs.Config{Cgroups: &cgroups.Cgroup{}}, "ignore", true},
		{"systemd driver: a scope needs a process", &configs.Config{Cgroups: systemd}, "", true},
		{"no cgroup config", &configs.Config{}, "", false},
	}
	for _, tt := range tests {
		if got := CRIUJoins(tt.cfg, tt.mode); got != tt.want {
			t.Errorf("%s: CRIUJoins = %v, want %v", tt.name, got, tt.want)
		}
	}
}
