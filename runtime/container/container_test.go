package container

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/ckpt-dev/ckpt/runtime/image"
	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"
)

func TestOnTmpfs(t *testing.T) {
	mounts := []*configs.Mount{
		{Destination: "/dev", Device: "tmpfs"},
		{Destination: "/run/", Device: "tmpfs"},
		{Destination: "/data", Device: "bind"},
	}
	for path, want := range map[string]bool{
		"/dev/shm": true, "/dev": false, "/devices": false, "/run/x": true, "/data/x": false, "/tmp": false,
	} {
		if got := onTmpfs(path, mounts); got != want {
			t.Errorf("onTmpfs(%s) = %t", path, got)
		}
	}
}

func TestResolveIn(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "real", "dir"), 0o755)
	os.Symlink("/real", filepath.Join(root, "abs"))
	os.Symlink("../../real", filepath.Join(root, "rel"))
	os.Symlink("/../../../etc", filepath.Join(root, "escape"))
	resolve := resolveIn(root)
	for in, want := range map[string]string{
		"/data":        "/data",
		"/abs/dir":     "/real/dir",
		"/rel/dir/x":   "/real/dir/x",
		"/escape/conf": "/etc/conf", // stays inside the root
	} {
		if got := resolve(in); got != want {
			t.Errorf("resolve(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestRemovePartialImage(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"core-1.img", "pages-1.img", image.DescriptorsFile, image.MetadataFile, ".ckpt.json.pending-1", "stats-dump", "dump.log", "user-notes"} {
		os.WriteFile(filepath.Join(dir, n), nil, 0o600)
	}
	removePartialImage(dir)
	entries, _ := os.ReadDir(dir)
	var left []string
	for _, e := range entries {
		left = append(left, e.Name())
	}
	if !slices.Equal(left, []string{"dump.log", "user-notes"}) {
		t.Errorf("left %v", left)
	}
}

func TestExternalCandidate(t *testing.T) {
	for _, tc := range []struct {
		mode uint32
		rdev uint64
		want bool
	}{
		{unix.S_IFREG | 0o644, 0, true},
		{unix.S_IFCHR | 0o666, unix.Mkdev(1, 3), true},    // /dev/null
		{unix.S_IFCHR | 0o620, unix.Mkdev(136, 0), false}, // a pty slave
		{unix.S_IFIFO | 0o600, 0, false},
		{unix.S_IFSOCK | 0o777, 0, false},
	} {
		if got := externalCandidate(unix.Stat_t{Mode: tc.mode, Rdev: tc.rdev}); got != tc.want {
			t.Errorf("mode %#o rdev %#x: %t", tc.mode, tc.rdev, got)
		}
	}
}

// TestInitStdio looks at this process's own stdio, which are in our own
// mount namespace: nothing is external.
func TestInitStdio(t *testing.T) {
	st, err := initStdio(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 3 {
		t.Fatalf("%v", st)
	}
	for _, s := range st {
		if s.Link == "" || s.External != "" {
			t.Errorf("fd %d: %+v", s.Fd, s)
		}
	}
	ids, err := mountIDs(os.Getpid())
	if err != nil || len(ids) == 0 {
		t.Fatalf("mount ids %v %v", ids, err)
	}
}
