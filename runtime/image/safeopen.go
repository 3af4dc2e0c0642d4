package image

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// readFileAt reads name from the dir open as dir, refusing anything but a
// regular file of at most max bytes. O_NOFOLLOW refuses a symlink (to
// /dev/zero, to a file outside); O_NONBLOCK keeps a FIFO from blocking the
// open, and the type check then refuses it.
func readFileAt(dir *os.File, name string, max int64) ([]byte, error) {
	fd, err := unix.Openat(int(dir.Fd()), name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		if err == unix.ELOOP {
			return nil, fmt.Errorf("%s is a symlink, refusing to follow it", name)
		}
		return nil, &os.PathError{Op: "open", Path: name, Err: err}
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("%s is not a regular file (mode %#o)", name, st.Mode&unix.S_IFMT)
	}
	if st.Size > max {
		return nil, fmt.Errorf("%s is %d bytes, more than the %d allowed", name, st.Size, max)
	}
	// The size may change under us: read at most max+1 to notice.
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("%s grew beyond %d bytes while being read", name, max)
	}
	return data, nil
}

// writeFileAtomic writes name in dir through a temp file renamed over it,
// so a reader sees the old file, the new one, or none, never half of one.
func writeFileAtomic(dir, name string, data []byte, perm os.FileMode) (retErr error) {
	f, err := os.CreateTemp(dir, "."+name+".tmp-")
	if err != nil {
		return err
	}
	defer func() {
		if retErr != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), dir+"/"+name); err != nil {
		return err
	}
	// Make the rename itself durable.
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

func openDir(path string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}
