package container

import (
	"errors"
	"os"
	"slices"
	"testing"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// containerMounts is a runc container's mount table: /dev (with content),
// an empty /dev/shm, runc's masked dirs sharing one read-only tmpfs, and a
// masked file bound from /dev's tmpfs.
func containerMounts() []*mountinfo.Info {
	return []*mountinfo.Info{
		{Mountpoint: "/", Root: "/rootfs", FSType: "ext4", Major: 254},
		{Mountpoint: "/dev", Root: "/", FSType: "tmpfs", Minor: 49, Options: "rw,nosuid", VFSOptions: "rw,size=65536k,mode=755"},
		{Mountpoint: "/dev/pts", Root: "/", FSType: "devpts", Minor: 50},
		{Mountpoint: "/dev/shm", Root: "/", FSType: "tmpfs", Minor: 51, Options: "rw,nosuid,nodev,noexec,relatime", VFSOptions: "rw,size=65536k"},
		{Mountpoint: "/proc/acpi", Root: "/", FSType: "tmpfs", Minor: 54, Options: "ro,relatime", VFSOptions: "ro,size=4k,nr_inodes=1"},
		{Mountpoint: "/proc/keys", Root: "/null", FSType: "tmpfs", Minor: 49, Options: "rw,nosuid", VFSOptions: "rw,size=65536k,mode=755"},
		{Mountpoint: "/sys/firmware", Root: "/", FSType: "tmpfs", Minor: 54, Options: "ro,relatime", VFSOptions: "ro,size=4k,nr_inodes=1"},
	}
}

func TestEmptyTmpfs(t *testing.T) {
	tests := []struct {
		name  string
		edit  func([]*mountinfo.Info) []*mountinfo.Info
		binds map[string]bool
		full  []string // mountpoints with content
		want  [][]string
	}{
		{name: "runc's masked dirs and /dev/shm", want: [][]string{{"/dev/shm"}, {"/proc/acpi", "/sys/firmware"}}},
		{name: "content", full: []string{"/dev/shm"}, want: [][]string{{"/proc/acpi", "/sys/firmware"}}},
		{name: "a bind mount of a host tmpfs", binds: map[string]bool{"/dev/shm": true}, want: [][]string{{"/proc/acpi", "/sys/firmware"}}},
		{
			name: "mounts of one superblock with other flags",
			edit: func(m []*mountinfo.Info) []*mountinfo.Info { m[6].Options = "ro,nosuid,relatime"; return m },
			want: [][]string{{"/dev/shm"}},
		},
		{
			name: "a subdirectory bound elsewhere",
			edit: func(m []*mountinfo.Info) []*mountinfo.Info { m[6].Root = "/x"; return m },
			want: [][]string{{"/dev/shm"}},
		},
		{
			name: "overmounted",
			edit: func(m []*mountinfo.Info) []*mountinfo.Info {
				return append(m, &mountinfo.Info{Mountpoint: "/dev/shm", Root: "/", FSType: "tmpfs", Minor: 60, Options: "rw", VFSOptions: "rw"})
			},
			want: [][]string{{"/proc/acpi", "/sys/firmware"}},
		},
		{
			name: "shared with the host",
			edit: func(m []*mountinfo.Info) []*mountinfo.Info { m[3].Optional = "master:1"; return m },
			want: [][]string{{"/proc/acpi", "/sys/firmware"}},
		},
		{
			name: "an option ckpt does not know",
			edit: func(m []*mountinfo.Info) []*mountinfo.Info { m[3].VFSOptions += ",seclabel"; return m },
			want: [][]string{{"/proc/acpi", "/sys/firmware"}},
		},
		{
			name: "a flag ckpt does not know",
			edit: func(m []*mountinfo.Info) []*mountinfo.Info { m[3].Options += ",nosymfollow"; return m },
			want: [][]string{{"/proc/acpi", "/sys/firmware"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mounts := containerMounts()
			if tt.edit != nil {
				mounts = tt.edit(mounts)
			}
			got, err := emptyTmpfs(mounts, tt.binds, func(m *mountinfo.Info) (bool, error) {
				return m.Mountpoint != "/dev" && !slices.Contains(tt.full, m.Mountpoint), nil
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
				t.Fatalf("left out %q, want %q", mps, tt.want)
			}
		})
	}

	got, _ := emptyTmpfs(containerMounts(), nil, func(*mountinfo.Info) (bool, error) { return true, nil })
	if g := got[len(got)-1]; g.Flags != "ro,relatime" || g.Data != "size=4k,nr_inodes=1" {
		t.Fatalf("masked dirs recorded as %q / %q", g.Flags, g.Data)
	}
	boom := errors.New("boom")
	if _, err := emptyTmpfs(containerMounts(), nil, func(*mountinfo.Info) (bool, error) { return false, boom }); !errors.Is(err, boom) {
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

// TestPristine looks at real directories: only an empty one with the
// options' mode and owner is as a new tmpfs would be.
func TestPristine(t *testing.T) {
	dir := t.TempDir()
	st := statOf(t, dir)
	m := &mountinfo.Info{Major: int(major(st.Dev)), Minor: int(minor(st.Dev)), VFSOptions: "rw,mode=700"}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if ok, err := pristine(dir, m); !ok || err != nil {
		t.Fatalf("empty dir: %v, %v", ok, err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if ok, _ := pristine(dir, m); ok {
		t.Fatal("a chmod'ed root passed for new")
	}
	os.Chmod(dir, 0o700)
	if err := os.WriteFile(dir+"/f", nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if ok, _ := pristine(dir, m); ok {
		t.Fatal("a dir with a file passed for empty")
	}
	m.Minor++
	os.Remove(dir + "/f")
	if ok, _ := pristine(dir, m); ok {
		t.Fatal("a dir on another device passed")
	}
}

func statOf(t *testing.T, p string) *unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return &st
}

func major(dev uint64) uint32 { return unix.Major(dev) }
func minor(dev uint64) uint32 { return unix.Minor(dev) }
