package criu

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// A shim serves one container, so an in-memory cache alone would probe
// CRIU again for every checkpoint and restore. FEATURE_CHECK re-runs CRIU's
// kernel detection, which costs ~25 ms where CRIU cannot keep its own
// cache (/run/criu.kdat needs /run to be a tmpfs) and ~2 ms where it can.
// The answers are kept on /run, for this boot and this binary only.
var (
	capsCacheFile = "/run/ckpt/criu-capabilities.json"
	bootIDFile    = "/proc/sys/kernel/random/boot_id"
)

// maxCapsCacheSize caps the file read: it holds one small JSON object.
const maxCapsCacheSize = 64 << 10

// capsCacheEntry is the file: whose capabilities, from which boot.
type capsCacheEntry struct {
	BootID       string        `json:"boot_id"`
	Path         string        `json:"path"`
	Dev          uint64        `json:"dev"`
	Ino          uint64        `json:"ino"`
	MtimeNs      int64         `json:"mtime_ns"`
	Size         int64         `json:"size"`
	Capabilities *Capabilities `json:"capabilities"`
}

func (e *capsCacheEntry) matches(key probeKey, boot string) bool {
	return e.BootID == boot && e.Path == key.path && e.Dev == key.dev && e.Ino == key.ino &&
		e.MtimeNs == key.mtime && e.Size == key.sz && e.Capabilities != nil
}

// cached returns the capabilities probed for key, by this process or by
// another since boot.
func cached(key probeKey) (*Capabilities, bool) {
	if c, ok := probeCache.Load(key); ok {
		return c.(*Capabilities), true
	}
	boot := bootID()
	if boot == "" {
		return nil, false
	}
	f, err := os.Open(capsCacheFile)
	if err != nil {
		return nil, false
	}
	defer f.Close()
	var e capsCacheEntry
	if err := json.NewDecoder(io.LimitReader(f, maxCapsCacheSize)).Decode(&e); err != nil || !e.matches(key, boot) {
		return nil, false
	}
	probeCache.Store(key, e.Capabilities)
	return e.Capabilities, true
}

// remember keeps c for key in this process and, best effort, on /run for
// the next ones; a file that cannot be written only costs a probe.
func remember(key probeKey, c *Capabilities) {
	probeCache.Store(key, c)
	boot := bootID()
	if boot == "" {
		return
	}
	data, err := json.Marshal(&capsCacheEntry{
		BootID: boot, Path: key.path, Dev: key.dev, Ino: key.ino, MtimeNs: key.mtime, Size: key.sz, Capabilities: c,
	})
	if err != nil {
		return
	}
	dir := filepath.Dir(capsCacheFile)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return
	}
	// Rename, so that concurrent shims never read a half-written file.
	tmp, err := os.CreateTemp(dir, ".criu-capabilities-*")
	if err != nil {
		return
	}
	_, werr := tmp.Write(data)
	if cerr := tmp.Close(); werr != nil || cerr != nil || os.Rename(tmp.Name(), capsCacheFile) != nil {
		os.Remove(tmp.Name())
	}
}

func bootID() string {
	b, err := os.ReadFile(bootIDFile)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
