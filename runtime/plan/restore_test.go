package plan

import (
	"strings"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"github.com/ckpt-dev/ckpt/runtime/image"
	"github.com/opencontainers/cgroups/devices/config"
	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"
)

func inherits(o *rpc.CriuOpts) map[string]int32 {
	m := map[string]int32{}
	for _, f := range o.InheritFd {
		m[f.GetKey()] = f.GetFd()
	}
	return m
}

func TestRestoreOpts(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(p *Restore)
		check func(t *testing.T, o *rpc.CriuOpts)
		err   string
	}{
		{
			name: "defaults",
			check: func(t *testing.T, o *rpc.CriuOpts) {
				if o.GetRoot() != "/run/runc/c1/criu-root" || o.GetImagesDirFd() != 5 || o.GetLogFile() != "restore.log" {
					t.Errorf("basics: %v", o)
				}
				if !o.GetRstSibling() || !o.GetEvasiveDevices() || !o.GetNotifyScripts() || !o.GetOrphanPtsMaster() || !o.GetManageCgroups() {
					t.Errorf("flags: %v", o)
				}
				if o.Pid != nil || o.EmptyNs != nil || len(o.InheritFd) != 0 || len(o.JoinNs) != 0 || o.CgroupYard != nil {
					t.Errorf("unexpected: %v", o)
				}
				m := extMnts(o)
				if m["/sys/fs/cgroup/cpu"] != "/sys/fs/cgroup/cpu/c1" || len(m) != 1 {
					t.Errorf("cgroup binds %v", m)
				}
			},
		},
		{
			name: "lazy pages",
			edit: func(p *Restore) { p.LazyPages = true },
			check: func(t *testing.T, o *rpc.CriuOpts) {
				if !o.GetLazyPages() {
					t.Errorf("lazy_pages not set: %v", o)
				}
			},
		},
		{
			name: "an image without memory restored in full",
			edit: func(p *Restore) { p.Options.LazyPages = true },
			err:  "dumped with lazy pages",
		},
		{
			name: "cgroup yard",
			edit: func(p *Restore) { p.CgroupYard = "/sys/fs/cgroup" },
			check: func(t *testing.T, o *rpc.CriuOpts) {
				if o.GetCgroupYard() != "/sys/fs/cgroup" {
					t.Errorf("cgroup yard %q", o.GetCgroupYard())
				}
			},
		},
		{
			name: "new tmpfs mounts for the image's empty ones",
			edit: func(p *Restore) {
				p.FreshTmpfs = []Bind{{Dest: "ckpt-tmpfs:/dev/shm", Source: "/run/runc/c1/tmpfs-0"}}
			},
			check: func(t *testing.T, o *rpc.CriuOpts) {
				if m := extMnts(o); m["ckpt-tmpfs:/dev/shm"] != "/run/runc/c1/tmpfs-0" {
					t.Errorf("tmpfs ext mounts: %v", m)
				}
			},
		},
		{
			name: "checkpoint options re-applied",
			edit: func(p *Restore) {
				p.Options = image.Options{TCPEstablished: true, ExtUnixSK: true, ShellJob: true, FileLocks: true, EmptyNetNS: true, CgroupsMode: "full"}
			},
			check: func(t *testing.T, o *rpc.CriuOpts) {
				if !o.GetTcpEstablished() || !o.GetExtUnixSk() || !o.GetShellJob() || !o.GetFileLocks() {
					t.Errorf("options: %v", o)
				}
				if o.GetEmptyNs() != unix.CLONE_NEWNET || o.GetManageCgroupsMode() != rpc.CriuCgMode_FULL {
					t.Errorf("empty ns / mode: %v", o)
				}
			},
		},
		{name: "pre-dump image", edit: func(p *Restore) { p.Options.PreDump = true }, err: "pre-dump"},
		{
			name: "bind mounts map to their sources, masked paths and devices to the host's",
			edit: func(p *Restore) {
				p.Config.Mounts = append(p.Config.Mounts, &configs.Mount{Source: "/host/new-data", Destination: "/data", Device: "bind"})
				p.Config.MaskPaths = []string{"/proc/kcore"}
				p.Config.Devices = []*config.Device{{Path: "/dev/null"}, {Path: "/dev/fuse"}}
			},
			check: func(t *testing.T, o *rpc.CriuOpts) {
				m := extMnts(o)
				if m["/data"] != "/host/new-data" || m["/dev/null"] != "/dev/null" || m["/dev/fuse"] != "/dev/fuse" {
					t.Errorf("ext mounts: %v", m)
				}
			},
		},
		{
			name: "external netns by inherit_fd, other joined namespaces by join_ns",
			edit: func(p *Restore) {
				p.Config.Namespaces = configs.Namespaces{{Type: configs.NEWNET, Path: "/run/netns/x"}, {Type: configs.NEWUTS, Path: "/proc/1/ns/uts"}, {Type: configs.NEWNS}}
				p.Options.ExternalNetNS = true
				p.NsFds = map[configs.NamespaceType]int32{configs.NEWNET: 4}
			},
			check: func(t *testing.T, o *rpc.CriuOpts) {
				if fd, ok := inherits(o)["extRootNetNS"]; !ok || fd != 4 {
					t.Errorf("inherit fds %v", inherits(o))
				}
				if len(o.JoinNs) != 1 || o.JoinNs[0].GetNs() != "uts" || o.JoinNs[0].GetNsFile() != "/proc/1/ns/uts" {
					t.Errorf("join ns %v", o.JoinNs)
				}
			},
		},
		{
			name: "image had an external netns, spec has none",
			edit: func(p *Restore) { p.Options.ExternalNetNS = true },
			err:  "must give one",
		},
		{
			name: "image has its own netns, spec joins one",
			edit: func(p *Restore) {
				p.Config.Namespaces = configs.Namespaces{{Type: configs.NEWNET, Path: "/run/netns/x"}}
				p.NsFds = map[configs.NamespaceType]int32{configs.NEWNET: 4}
			},
			err: "contains the container's own network namespace",
		},
		{
			name: "cgroup namespace path cannot be joined",
			edit: func(p *Restore) {
				p.Config.Namespaces = append(p.Config.Namespaces, configs.Namespace{Type: configs.NEWCGROUP, Path: "/proc/1/ns/cgroup"})
			},
			err: "cgroup namespace",
		},
		{
			name: "stdio: pipes and external files inherited from criu's fds, once each",
			edit: func(p *Restore) {
				p.Descriptors = []string{"/dev/null", "pipe:[100]", "pipe:[100]"}
				p.Stdio = []image.Stdio{{Fd: 0, Link: "/host/in.log", External: "file[1b:2c]"}, {Fd: 1, Link: "pipe:[100]"}, {Fd: 2, Link: "pipe:[100]"}}
			},
			check: func(t *testing.T, o *rpc.CriuOpts) {
				m := inherits(o)
				if len(o.InheritFd) != 2 || m["pipe:[100]"] != 1 || m["file[1b:2c]"] != 0 {
					t.Errorf("inherit fds %v", m)
				}
			},
		},
		{
			name: "stdio: terminals and container files are left to CRIU",
			edit: func(p *Restore) { p.Descriptors = []string{"/dev/pts/0", "/dev/pts/0", "/tmp/log"} },
			check: func(t *testing.T, o *rpc.CriuOpts) {
				if len(o.InheritFd) != 0 {
					t.Errorf("inherit fds %v", inherits(o))
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := &Restore{
				Config: baseConfig(), Root: "/run/runc/c1/criu-root", ImagesDirFd: 5, WorkDirFd: -1,
				Descriptors: []string{"/dev/null", "/dev/null", "/dev/null"},
				CgroupBinds: []Bind{{Dest: "/sys/fs/cgroup/cpu", Source: "/sys/fs/cgroup/cpu/c1"}},
				Caps:        allCaps,
			}
			if tc.edit != nil {
				tc.edit(p)
			}
			o, err := p.Opts()
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, o)
		})
	}
}

func TestCgroupsMode(t *testing.T) {
	for in, want := range map[string]rpc.CriuCgMode{
		"": rpc.CriuCgMode_DEFAULT, "soft": rpc.CriuCgMode_SOFT, "full": rpc.CriuCgMode_FULL,
		"strict": rpc.CriuCgMode_STRICT, "ignore": rpc.CriuCgMode_IGNORE,
	} {
		if got, err := CgroupsMode(in); err != nil || got != want {
			t.Errorf("%q: %v %v", in, got, err)
		}
	}
	if _, err := CgroupsMode("props"); err == nil {
		t.Error("invalid mode accepted")
	}
}
