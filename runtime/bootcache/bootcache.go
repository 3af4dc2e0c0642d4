// Package bootcache keeps what an executable answered (its version, what
// it supports) for the rest of the boot, across processes. A shim serves
// one container, so a cache in memory alone would ask the binary again for
// every checkpoint and restore: an exec of runc, or CRIU's kernel-feature
// detection (~25 ms where CRIU cannot keep its own cache). An entry holds
// for the boot it was written in and for the exact file it describes
// (path, device, inode, size, modification time): a binary replaced on
// disk is asked again.
package bootcache

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
)

// DefaultBootIDFile is the kernel's random id of this boot.
const DefaultBootIDFile = "/proc/sys/kernel/random/boot_id"

// maxFileSize caps the file read: it holds one small JSON object.
const maxFileSize = 64 << 10

// Binary identifies one executable file.
type Binary struct {
	Path    string `json:"path"`
	Dev     uint64 `json:"dev"`
	Ino     uint64 `json:"ino"`
	MtimeNs int64  `json:"mtime_ns"`
	Size    int64  `json:"size"`
}

// Identify stats the file at path.
func Identify(path string) (Binary, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return Binary{}, err
	}
	st := fi.Sys().(*syscall.Stat_t)
	return Binary{Path: path, Dev: st.Dev, Ino: st.Ino, MtimeNs: fi.ModTime().UnixNano(), Size: fi.Size()}, nil
}

// Cache keeps one value per binary in memory and the last one stored in
// File, for other processes of the same boot. A file that cannot be read
// or written only costs a new answer from the binary.
type Cache[T any] struct {
	// File is where the value is kept, on a filesystem that a reboot
	// need not clear (the boot id guards it).
	File string
	// BootIDFile is DefaultBootIDFile unless set (tests).
	BootIDFile string

	mem sync.Map // Binary -> T
}

type entry[T any] struct {
	BootID string `json:"boot_id"`
	Binary
	Value *T `json:"value"`
}

// Load returns the value stored for b, by this process or by another since
// boot.
func (c *Cache[T]) Load(b Binary) (T, bool) {
	if v, ok := c.mem.Load(b); ok {
		return v.(T), true
	}
	var zero T
	boot := c.bootID()
	if boot == "" {
		return zero, false
	}
	f, err := os.Open(c.File)
	if err != nil {
		return zero, false
	}
	defer f.Close()
	var e entry[T]
	if err := json.NewDecoder(io.LimitReader(f, maxFileSize)).Decode(&e); err != nil ||
		e.BootID != boot || e.Binary != b || e.Value == nil {
		return zero, false
	}
	c.mem.Store(b, *e.Value)
	return *e.Value, true
}

// Store keeps v for b in this process and, best effort, in File.
func (c *Cache[T]) Store(b Binary, v T) {
	c.mem.Store(b, v)
	boot := c.bootID()
	if boot == "" {
		return
	}
	data, err := json.Marshal(&entry[T]{BootID: boot, Binary: b, Value: &v})
	if err != nil {
		return
	}
	dir := filepath.Dir(c.File)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return
	}
	// Rename, so that concurrent processes never read a half-written file.
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(c.File)+"-*")
	if err != nil {
		return
	}
	_, werr := tmp.Write(data)
	if cerr := tmp.Close(); werr != nil || cerr != nil || os.Rename(tmp.Name(), c.File) != nil {
		os.Remove(tmp.Name())
	}
}

// Forget empties the in-memory cache, as a new process would find it.
func (c *Cache[T]) Forget() {
	c.mem.Range(func(k, _ any) bool { c.mem.Delete(k); return true })
}

func (c *Cache[T]) bootID() string {
	p := c.BootIDFile
	if p == "" {
		p = DefaultBootIDFile
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
