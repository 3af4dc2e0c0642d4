package container

import (
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
	"golang.org/x/sys/unix"
)

// resolveIn maps a mount destination to its place in rootfs with symlinks
// resolved inside rootfs, as CRIU sees the mountpoint.
func resolveIn(rootfs string) func(string) string {
	return func(dest string) string {
		p, err := securejoin.SecureJoin(rootfs, dest)
		if err != nil {
			return ""
		}
		rel := strings.TrimPrefix(p, rootfs)
		if rel == "" || rel[0] != '/' {
			rel = "/" + rel
		}
		return rel
	}
}

func nsInode(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}
