package tmpfs

import (
	"errors"
	"maps"
	"slices"
	"testing"

	"github.com/ckpt-dev/ckpt/runtime/image"
	"github.com/moby/sys/mountinfo"
)

// containerMounts is a runc container's mount table: /dev with /dev/pts
// and an empty /dev/shm on it, runc's masked dirs sharing one read-only
// tmpfs, and a masked file bound from /dev's tmpfs.
func containerMounts() []*mountinfo.Info {
	return []*mountinfo.Info{
		{ID: 1, Mountpoint: "/", Root: "/rootfs", FSType: "ext4", Major: 254},
		{ID: 2, Parent: 1, Mountpoint: "/dev", Root: "/", FSType: "tmpfs", Minor: 49, Options: "rw,nosuid", VFSOptions: "rw,size=65536k,mode=755"},
		{ID: 3, Parent: 2, Mountpoint: "/dev/pts", Root: "/", FSType: "devpts", Minor: 50},
		{ID: 4, Parent: 2, Mountpoint: "/dev/shm", Root: "/", FSType: "tmpfs", Minor: 51, Options: "rw,nosuid,nodev,noexec,relatime", VFSOptions: "rw,size=65536k"},
		{ID: 5, Parent: 1, Mountpoint: "/proc/acpi", Root: "/", FSType: "tmpfs", Minor: 54, Options: "ro,relatime", VFSOptions: "ro,size=4k,nr_inodes=1"},
		{ID: 6, Parent: 1, Mountpoint: "/proc/keys", Root: "/null", FSType: "tmpfs", Minor: 49, Options: "rw,nosuid", VFSOptions: "rw,size=65536k,mode=755"},
		{ID: 7, Parent: 1, Mountpoint: "/sys/firmware", Root: "/", FSType: "tmpfs", Minor: 54, Options: "ro,relatime", VFSOptions: "ro,size=4k,nr_inodes=1"},
	}
}

func TestRecreatableTmpfs(t *testing.T) {
	masked := map[string]bool{"/proc/keys": true}
	tests := []struct {
		name       string
		edit       func([]*mountinfo.Info) []*mountinfo.Info
		binds      map[string]bool
		masked     map[string]bool
		mayUnmount bool
		refused    []string // mountpoints look says ckpt cannot recreate
		want       [][]string
	}{
		{name: "runc's container", masked: masked, want: [][]string{{"/dev"}, {"/dev/shm"}, {"/proc/acpi", "/sys/firmware"}}},
		{name: "content ckpt cannot recreate", masked: masked, refused: []string{"/dev/shm"}, want: [][]string{{"/dev"}, {"/proc/acpi", "/sys/firmware"}}},
		{
			name: "mounts on a tmpfs where a process may unmount them", masked: masked, mayUnmount: true,
			want: [][]string{{"/dev/shm"}, {"/proc/acpi", "/sys/firmware"}},
		},
		{
			// Not one of runc's masked files: a bind of a part of /dev.
			name: "a file of /dev's tmpfs bound elsewhere",
			want: [][]string{{"/dev/shm"}, {"/proc/acpi", "/sys/firmware"}},
		},
		{name: "a bind mount of a host tmpfs", masked: masked, binds: map[string]bool{"/dev/shm": true}, want: [][]string{{"/dev"}, {"/proc/acpi", "/sys/firmware"}}},
		{
			name: "mounts of one superblock with other flags", masked: masked,
			edit: func(m []*mountinfo.Info) []*mountinfo.Info { m[6].Options = "ro,nosuid,relatime"; return m },
			want: [][]string{{"/dev"}, {"/dev/shm"}},
		},
		{
			name: "a subdirectory bound elsewhere", masked: masked,
			edit: func(m []*mountinfo.Info) []*mountinfo.Info { m[6].Root = "/x"; return m },
			want: [][]string{{"/dev"}, {"/dev/shm"}},
		},
		{
			name: "a mount on one of several mounts of a superblock", masked: masked,
			edit: func(m []*mountinfo.Info) []*mountinfo.Info {
				return append(m, &mountinfo.Info{ID: 8, Parent: 5, Mountpoint: "/proc/acpi/x", Root: "/", FSType: "proc"})
			},
			want: [][]string{{"/dev"}, {"/dev/shm"}},
		},
		{
			name: "overmounted", masked: masked,
			edit: func(m []*mountinfo.Info) []*mountinfo.Info {
				return append(m, &mountinfo.Info{ID: 8, Parent: 4, Mountpoint: "/dev/shm", Root: "/", FSType: "tmpfs", Minor: 60, Options: "rw", VFSOptions: "rw"})
			},
			// /dev/shm's tmpfs is hidden; /dev only has a mount on it.
			want: [][]string{{"/dev"}, {"/proc/acpi", "/sys/firmware"}},
		},
		{
			name: "shared with the host", masked: masked,
			edit: func(m []*mountinfo.Info) []*mountinfo.Info { m[3].Optional = "master:1"; return m },
			want: [][]string{{"/dev"}, {"/proc/acpi", "/sys/firmware"}},
		},
		{
			name: "an option ckpt does not know", masked: masked,
			edit: func(m []*mountinfo.Info) []*mountinfo.Info { m[3].VFSOptions += ",seclabel"; return m },
			want: [][]string{{"/dev"}, {"/proc/acpi", "/sys/firmware"}},
		},
		{
			name: "a flag ckpt does not know", masked: masked,
			edit: func(m []*mountinfo.Info) []*mountinfo.Info { m[3].Options += ",nosymfollow"; return m },
			want: [][]string{{"/dev"}, {"/proc/acpi", "/sys/firmware"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mounts := containerMounts()
			if tt.edit != nil {
				mounts = tt.edit(mounts)
			}
			got, err := recreatableTmpfs(mounts, tt.binds, tt.masked, tt.mayUnmount, func(m *mountinfo.Info, children map[string]bool) (tmpfsContent, bool, error) {
				return tmpfsContent{}, !slices.Contains(tt.refused, m.Mountpoint), nil
			})
			if err != nil {
				t.Fatal(err)
			}
			var mps [][]string
			for _, g := range got {
				mps = append(mps, g.Mountpoints)
				if g.Key != freshTmpfsKeyPrefix+g.Mountpoints[0] {
					t.Errorf("key %q for %q", g.Key, g.Mountpoints)
				}
			}
			if !slices.EqualFunc(mps, tt.want, slices.Equal) {
				t.Fatalf("recreated %q, want %q", mps, tt.want)
			}
		})
	}
}

// TestRecreatableTmpfsRecords: what the look is given and what ends up in
// ckpt.json.
func TestRecreatableTmpfsRecords(t *testing.T) {
	looked := map[string][]string{}
	dev := []image.TmpfsEntry{{Path: "null", Type: "char", Mode: 0o666, Major: 1, Minor: 3, MtimeNs: 7}}
	got, err := recreatableTmpfs(containerMounts(), nil, map[string]bool{"/proc/keys": true}, false, func(m *mountinfo.Info, children map[string]bool) (tmpfsContent, bool, error) {
		looked[m.Mountpoint] = slices.Sorted(maps.Keys(children))
		if m.Mountpoint == "/dev" {
			return tmpfsContent{entries: dev, rootMtime: 9}, true, nil
		}
		return tmpfsContent{}, true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Only mounts right on it are /dev's children; the masked file is no
	// mount of /dev's superblock as far as the look is concerned.
	if want := []string{"pts", "shm"}; !slices.Equal(looked["/dev"], want) {
		t.Errorf("/dev looked at with children %q, want %q", looked["/dev"], want)
	}
	if len(looked["/dev/shm"]) != 0 || len(looked) != 3 {
		t.Errorf("looked at %v", looked)
	}
	if g := got[0]; g.Mountpoints[0] != "/dev" || !slices.Equal(g.Entries, dev) || g.RootMtimeNs != 9 || g.Flags != "rw,nosuid" || g.Data != "size=65536k,mode=755" {
		t.Errorf("/dev recorded as %+v", g)
	}
	if g := got[2]; g.Flags != "ro,relatime" || g.Data != "size=4k,nr_inodes=1" || len(g.Entries) != 0 {
		t.Errorf("masked dirs recorded as %+v", g)
	}
	boom := errors.New("boom")
	if _, err := recreatableTmpfs(containerMounts(), nil, nil, false, func(*mountinfo.Info, map[string]bool) (tmpfsContent, bool, error) {
		return tmpfsContent{}, false, boom
	}); !errors.Is(err, boom) {
		t.Fatalf("error looking at a mount: %v", err)
	}
}

func TestTmpfsRootAttrs(t *testing.T) {
	tests := []struct {
		opts          string
		mode, uid, gi uint32
	}{
		{"rw,size=65536k", 0o1777, 0, 0},
		{"rw,size=65536k,mode=755", 0o755, 0, 0},
		{"rw,mode=700,uid=1000,gid=100,inode64", 0o700, 1000, 100},
	}
	for _, tt := range tests {
		mode, uid, gid := tmpfsRootAttrs(tt.opts)
		if mode != tt.mode || uid != tt.uid || gid != tt.gi {
			t.Errorf("%q: mode %o uid %d gid %d", tt.opts, mode, uid, gid)
		}
	}
}
