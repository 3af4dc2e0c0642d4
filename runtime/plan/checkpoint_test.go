package plan

import (
	"slices"
	"strings"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"github.com/ckpt-dev/ckpt/runtime/image"
	"github.com/opencontainers/cgroups/devices/config"
	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"
)

var allCaps = Caps{OrphanPtsMaster: true, ExternalNetNS: true, ExternalPidNS: true, CgroupV2Freezer: true}

// baseConfig is a container as runc's default spec makes it: private
// namespaces, proc/dev/sys/cgroup mounts.
func baseConfig() *configs.Config {
	return &configs.Config{
		Rootfs: "/bundle/rootfs",
		Namespaces: configs.Namespaces{
			{Type: configs.NEWPID}, {Type: configs.NEWNET}, {Type: configs.NEWIPC},
			{Type: configs.NEWUTS}, {Type: configs.NEWNS},
		},
		Mounts: []*configs.Mount{
			{Source: "proc", Destination: "/proc", Device: "proc"},
			{Source: "tmpfs", Destination: "/dev", Device: "tmpfs"},
			{Source: "sysfs", Destination: "/sys", Device: "sysfs"},
			{Source: "cgroup", Destination: "/sys/fs/cgroup", Device: "cgroup"},
		},
		Labels: []string{"bundle=/bundle"},
	}
}

func extMnts(o *rpc.CriuOpts) map[string]string {
	m := map[string]string{}
	for _, e := range o.ExtMnt {
		m[e.GetKey()] = e.GetVal()
	}
	return m
}

func TestCheckpointOpts(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(p *Checkpoint)
		check func(t *testing.T, o *rpc.CriuOpts)
		err   string
	}{
		{
			name: "defaults",
			check: func(t *testing.T, o *rpc.CriuOpts) {
				if o.GetImagesDirFd() != 7 || o.GetPid() != 42 || o.GetRoot() != "/bundle/rootfs" || o.GetLogFile() != "dump.log" {
					t.Errorf("basics: %v", o)
				}
				if !o.GetManageCgroups() || o.GetManageCgroupsMode() != rpc.CriuCgMode_DEFAULT || !o.GetNotifyScripts() || !o.GetOrphanPtsMaster() {
					t.Errorf("flags: %v", o)
				}
				if o.GetLeaveRunning() || o.GetTcpEstablished() || o.GetShellJob() || o.EmptyNs != nil || o.WorkDirFd != nil || o.ConfigFile != nil {
					t.Errorf("unasked options set: %v", o)
				}
				if o.GetFreezeCgroup() != "/sys/fs/cgroup/freezer/c1" {
					t.Errorf("freeze cgroup %q", o.GetFreezeCgroup())
				}
				want := map[string]string{"/sys/fs/cgroup/cpu": "/sys/fs/cgroup/cpu", "/sys/fs/cgroup/systemd": "/sys/fs/cgroup/systemd"}
				if got := extMnts(o); !mapsEqual(got, want) {
					t.Errorf("ext mounts %v, want %v", got, want)
				}
			},
		},
		{
			name: "lazy dump with a TLS page server",
			edit: func(p *Checkpoint) {
				p.Lazy = &PageServer{Host: "10.0.0.1", Port: 27000, TLS: TLS{Enabled: true, CACert: "/ca.pem"}}
			},
			check: func(t *testing.T, o *rpc.CriuOpts) {
				if !o.GetLazyPages() || o.GetPs().GetPort() != 27000 || o.GetPs().GetAddress() != "10.0.0.1" || !o.GetTls() || o.GetTlsCacert() != "/ca.pem" {
					t.Errorf("lazy options: %v", o)
				}
			},
		},
		{
			name: "lazy pre-dump",
			edit: func(p *Checkpoint) { p.Lazy = &PageServer{Port: 1}; p.Options.PreDump = true },
			err:  "cannot be lazy",
		},
		{
			name: "user options",
			edit: func(p *Checkpoint) {
				p.Options = image.Options{LeaveRunning: true, TCPEstablished: true, ExtUnixSK: true, ShellJob: true, FileLocks: true, EmptyNetNS: true, CgroupsMode: "strict"}
				p.WorkDirFd = 9
			},
			check: func(t *testing.T, o *rpc.CriuOpts) {
				if !o.GetLeaveRunning() || !o.GetTcpEstablished() || !o.GetExtUnixSk() || !o.GetShellJob() || !o.GetFileLocks() {
					t.Errorf("user options lost: %v", o)
				}
				if o.GetEmptyNs() != unix.CLONE_NEWNET || o.GetManageCgroupsMode() != rpc.CriuCgMode_STRICT || o.GetWorkDirFd() != 9 {
					t.Errorf("empty ns / cg mode / work dir: %v", o)
				}
			},
		},
		{name: "bad cgroups mode", edit: func(p *Checkpoint) { p.Options.CgroupsMode = "hard" }, err: "invalid cgroups mode"},
		{
			name: "no cgroup yard: CRIU mounts its own",
			check: func(t *testing.T, o *rpc.CriuOpts) {
				if o.CgroupYard != nil {
					t.Errorf("cgroup yard %q", o.GetCgroupYard())
				}
			},
		},
		{
			name: "cgroup yard",
			edit: func(p *Checkpoint) { p.CgroupYard = "/sys/fs/cgroup" },
			check: func(t *testing.T, o *rpc.CriuOpts) {
				if o.GetCgroupYard() != "/sys/fs/cgroup" {
					t.Errorf("cgroup yard %q", o.GetCgroupYard())
				}
			},
		},
		{
			name: "empty tmpfs mounts as external mounts, one key per superblock",
			edit: func(p *Checkpoint) {
				p.FreshTmpfs = []image.FreshTmpfs{
					{Key: "ckpt-tmpfs:/dev/shm", Mountpoints: []string{"/dev/shm"}},
					{Key: "ckpt-tmpfs:/proc/acpi", Mountpoints: []string{"/proc/acpi", "/sys/firmware"}},
				}
			},
			check: func(t *testing.T, o *rpc.CriuOpts) {
				m := extMnts(o)
				if m["/dev/shm"] != "ckpt-tmpfs:/dev/shm" || m["/proc/acpi"] != "ckpt-tmpfs:/proc/acpi" || m["/sys/firmware"] != "ckpt-tmpfs:/proc/acpi" {
					t.Errorf("tmpfs ext mounts: %v", m)
				}
			},
		},
		{name: "no pid", edit: func(p *Checkpoint) { p.InitPid = 0 }, err: "no init pid"},
		{
			name: "bind mounts, symlinked destination resolved in the rootfs",
			edit: func(p *Checkpoint) {
				p.Config.Mounts = append(p.Config.Mounts,
					&configs.Mount{Source: "/host/data", Destination: "/data", Device: "bind"},
					&configs.Mount{Source: "/host/conf", Destination: "/etc/link/conf", Device: "bind"})
				p.ResolveDest = func(d string) string { return strings.Replace(d, "/etc/link", "/etc/real", 1) }
			},
			check: func(t *testing.T, o *rpc.CriuOpts) {
				m := extMnts(o)
				if m["/data"] != "/data" || m["/etc/real/conf"] != "/etc/real/conf" {
					t.Errorf("bind ext mounts: %v", m)
				}
				if _, ok := m["/etc/link/conf"]; ok {
					t.Errorf("unresolved destination used: %v", m)
				}
			},
		},
		{
			name: "masked files and devices",
			edit: func(p *Checkpoint) {
				p.MaskedFiles = []string{"/proc/kcore", "/proc/keys"}
				p.Config.Devices = []*config.Device{{Path: "/dev/null"}, {Path: "/dev/fuse"}}
			},
			check: func(t *testing.T, o *rpc.CriuOpts) {
				m := extMnts(o)
				if m["/proc/kcore"] != "/dev/null" || m["/proc/keys"] != "/dev/null" || m["/dev/fuse"] != "/dev/fuse" || m["/dev/null"] != "/dev/null" {
					t.Errorf("masked/devices: %v", m)
				}
			},
		},
		{
			name: "cgroup v2 host: cgroup mount is real, freezer needs CRIU support",
			edit: func(p *Checkpoint) { p.CgroupV2 = true; p.Caps.CgroupV2Freezer = false },
			check: func(t *testing.T, o *rpc.CriuOpts) {
				if len(o.ExtMnt) != 0 || o.FreezeCgroup != nil {
					t.Errorf("v2: ext %v freeze %v", o.ExtMnt, o.FreezeCgroup)
				}
			},
		},
		{
			name: "cgroup namespace: no v1 binds",
			edit: func(p *Checkpoint) {
				p.Config.Namespaces = append(p.Config.Namespaces, configs.Namespace{Type: configs.NEWCGROUP})
			},
			check: func(t *testing.T, o *rpc.CriuOpts) {
				if len(o.ExtMnt) != 0 {
					t.Errorf("ext mounts %v", extMnts(o))
				}
			},
		},
		{
			name: "external net and pid namespaces; empty ns not applied to a joined netns",
			edit: func(p *Checkpoint) {
				p.Config.Namespaces = configs.Namespaces{{Type: configs.NEWNET, Path: "/run/netns/x"}, {Type: configs.NEWPID, Path: "/proc/1/ns/pid"}, {Type: configs.NEWNS}}
				p.NsInodes = map[configs.NamespaceType]uint64{configs.NEWNET: 4026532000, configs.NEWPID: 4026531836}
				p.Options.EmptyNetNS = true
			},
			check: func(t *testing.T, o *rpc.CriuOpts) {
				want := []string{"net[4026532000]:extRootNetNS", "pid[4026531836]:extRootPidNS"}
				if !slices.Equal(o.External, want) || o.EmptyNs != nil {
					t.Errorf("external %v empty_ns %v", o.External, o.EmptyNs)
				}
			},
		},
		{
			name: "external netns without its inode",
			edit: func(p *Checkpoint) {
				p.Config.Namespaces = configs.Namespaces{{Type: configs.NEWNET, Path: "/run/netns/x"}}
			},
			err: "no inode",
		},
		{
			name: "external netns on an old CRIU",
			edit: func(p *Checkpoint) {
				p.Config.Namespaces = configs.Namespaces{{Type: configs.NEWNET, Path: "/run/netns/x"}}
				p.Caps.ExternalNetNS = false
			},
			err: "cannot treat the net namespace as external",
		},
		{
			name: "stdio files outside the container are external",
			edit: func(p *Checkpoint) { p.ExternalFiles = []string{"file[1b:2a]"} },
			check: func(t *testing.T, o *rpc.CriuOpts) {
				if !slices.Equal(o.External, []string{"file[1b:2a]"}) {
					t.Errorf("external %v", o.External)
				}
			},
		},
		{
			name: "pre-dump: memory only",
			edit: func(p *Checkpoint) {
				p.Options.PreDump = true
				p.MaskedFiles = []string{"/proc/kcore"}
				p.ExternalFiles = []string{"file[1:2]"}
			},
			check: func(t *testing.T, o *rpc.CriuOpts) {
				if len(o.ExtMnt) != 0 || len(o.External) != 0 || !o.GetTrackMem() {
					t.Errorf("pre-dump opts: %v", o)
				}
			},
		},
		{
			name: "parent path tracks memory",
			edit: func(p *Checkpoint) { p.Options.ParentPath = "../pre" },
			check: func(t *testing.T, o *rpc.CriuOpts) {
				if o.GetParentImg() != "../pre" || !o.GetTrackMem() {
					t.Errorf("parent: %v", o)
				}
			},
		},
		{
			name: "org.criu.config annotation",
			edit: func(p *Checkpoint) { p.Config.Labels = append(p.Config.Labels, "org.criu.config=/etc/criu/mine.conf") },
			check: func(t *testing.T, o *rpc.CriuOpts) {
				if o.GetConfigFile() != "/etc/criu/mine.conf" {
					t.Errorf("config file %q", o.GetConfigFile())
				}
			},
		},
		{
			name: "old CRIU without orphan pts master",
			edit: func(p *Checkpoint) { p.Caps.OrphanPtsMaster = false },
			check: func(t *testing.T, o *rpc.CriuOpts) {
				if o.GetOrphanPtsMaster() {
					t.Error("orphan_pts_master set")
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := &Checkpoint{
				Config: baseConfig(), InitPid: 42, ImagesDirFd: 7, WorkDirFd: -1,
				FreezeCgroup: "/sys/fs/cgroup/freezer/c1", CgroupV1Hierarchies: []string{"cpu", "systemd"},
				Caps: allCaps,
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

func TestNormalize(t *testing.T) {
	own := baseConfig()
	joined := baseConfig()
	joined.Namespaces = configs.Namespaces{{Type: configs.NEWNET, Path: "/run/netns/x"}, {Type: configs.NEWPID, Path: "/proc/1/ns/pid"}}
	hostNet := baseConfig()
	hostNet.Namespaces = configs.Namespaces{{Type: configs.NEWPID}}
	for _, tc := range []struct {
		name     string
		cfg      *configs.Config
		emptyNet bool
		extNet   bool
		extPid   bool
	}{
		{"own netns keeps empty ns", own, true, false, false},
		{"joined namespaces are external", joined, false, true, true},
		{"host network: no empty ns", hostNet, false, false, false},
	} {
		got := Normalize(tc.cfg, image.Options{EmptyNetNS: true})
		if got.EmptyNetNS != tc.emptyNet || got.ExternalNetNS != tc.extNet || got.ExternalPidNS != tc.extPid {
			t.Errorf("%s: %+v", tc.name, got)
		}
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
