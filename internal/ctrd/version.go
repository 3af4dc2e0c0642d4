package ctrd

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// ContainerdBinEnv names the containerd binary the tests run (its dir also
// gives containerd-shim-runc-v2, the peer shim): the test matrix runs the
// suites once with the containerd on PATH and once with
// CKPT_CONTAINERD_BIN=/opt/ckpt-containerd/v2.4.2/bin/containerd.
const ContainerdBinEnv = "CKPT_CONTAINERD_BIN"

// ContainerdBin is the containerd binary under test: $CKPT_CONTAINERD_BIN,
// else containerd on PATH.
func ContainerdBin() string {
	if b := os.Getenv(ContainerdBinEnv); b != "" {
		return b
	}
	if b, err := exec.LookPath("containerd"); err == nil {
		return b
	}
	return "containerd"
}

// containerdPath is PATH for containerd and its shims: ckpt's shim first,
// then the dir of the containerd under test (its runc shim and ctr), then
// the rest.
func containerdPath(env []string, shimDir string) []string {
	dirs := shimDir
	if b := os.Getenv(ContainerdBinEnv); b != "" {
		dirs += ":" + filepath.Dir(b)
	}
	return withPath(env, dirs)
}

// Version is a containerd release as major.minor.
type Version struct{ Major, Minor int }

func (v Version) String() string { return fmt.Sprintf("%d.%d", v.Major, v.Minor) }

// AtLeast reports whether v is major.minor or later.
func (v Version) AtLeast(major, minor int) bool {
	return v.Major > major || v.Major == major && v.Minor >= minor
}

// ParseVersion reads "v2.4.2", "2.2.9-rc.1" and the like.
func ParseVersion(s string) (Version, error) {
	f := strings.SplitN(strings.TrimPrefix(strings.TrimSpace(s), "v"), ".", 3)
	if len(f) < 2 {
		return Version{}, fmt.Errorf("containerd version %q: want major.minor", s)
	}
	major, err := strconv.Atoi(f[0])
	if err != nil {
		return Version{}, fmt.Errorf("containerd version %q: %w", s, err)
	}
	digits := strings.IndexFunc(f[1], func(r rune) bool { return r < '0' || r > '9' })
	if digits < 0 {
		digits = len(f[1])
	}
	minor, err := strconv.Atoi(f[1][:digits])
	if err != nil {
		return Version{}, fmt.Errorf("containerd version %q: %w", s, err)
	}
	return Version{major, minor}, nil
}

// ContainerdVersion is the version of the running daemon.
func (d *Daemon) ContainerdVersion(ctx context.Context) (Version, error) {
	v, err := d.Client.Version(ctx)
	if err != nil {
		return Version{}, err
	}
	return ParseVersion(v.Version)
}

// CtrBin is the ctr of the containerd under test: beside
// $CKPT_CONTAINERD_BIN when that has one, else ctr on PATH.
func CtrBin() string {
	if b := os.Getenv(ContainerdBinEnv); b != "" {
		if p := filepath.Join(filepath.Dir(b), "ctr"); isExecutable(p) {
			return p
		}
	}
	return "ctr"
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}
