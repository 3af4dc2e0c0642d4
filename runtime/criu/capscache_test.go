package criu

import (
	"os"
	"path/filepath"
	"testing"
)

// useCapsCache points the on-disk cache and the boot id at temp files and
// empties the in-memory cache, as a new process would see it.
func useCapsCache(t *testing.T, boot string) (cacheFile, bootFile string) {
	t.Helper()
	dir := t.TempDir()
	cacheFile, bootFile = filepath.Join(dir, "run", "ckpt", "caps.json"), filepath.Join(dir, "boot_id")
	if boot != "" {
		if err := os.WriteFile(bootFile, []byte(boot+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	oldCache, oldBoot := capsCacheFile, bootIDFile
	capsCacheFile, bootIDFile = cacheFile, bootFile
	t.Cleanup(func() { capsCacheFile, bootIDFile = oldCache, oldBoot; forgetAll() })
	forgetAll()
	return cacheFile, bootFile
}

func forgetAll() {
	probeCache.Range(func(k, _ any) bool { probeCache.Delete(k); return true })
}

func TestCapabilitiesCacheAcrossProcesses(t *testing.T) {
	key := probeKey{path: "/usr/local/sbin/criu", dev: 1, ino: 2, mtime: 3, sz: 4}
	caps := &Capabilities{Path: key.path, Version: Version{Major: 4, Minor: 1, Sublevel: 1}, Features: Features{LazyPages: true}}
	tests := []struct {
		name string
		// change runs between remember (one process) and cached (the
		// next one).
		change func(t *testing.T, cacheFile, bootFile string)
		lookup probeKey
		hit    bool
	}{
		{name: "same binary, same boot", lookup: key, hit: true},
		{name: "rebooted", lookup: key, change: func(t *testing.T, _, bootFile string) {
			os.WriteFile(bootFile, []byte("another-boot\n"), 0o644)
		}},
		{name: "binary replaced", lookup: probeKey{path: key.path, dev: 1, ino: 2, mtime: 99, sz: 4}},
		{name: "other binary", lookup: probeKey{path: "/usr/sbin/criu", dev: 1, ino: 2, mtime: 3, sz: 4}},
		{name: "corrupt file", lookup: key, change: func(t *testing.T, cacheFile, _ string) {
			os.WriteFile(cacheFile, []byte(`{"boot_id": "b1", "path": `), 0o600)
		}},
		{name: "no boot id", lookup: key, change: func(t *testing.T, _, bootFile string) {
			os.Remove(bootFile)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cacheFile, bootFile := useCapsCache(t, "b1")
			remember(key, caps)
			if _, err := os.Stat(cacheFile); err != nil {
				t.Fatalf("nothing written: %v", err)
			}
			forgetAll()
			if tc.change != nil {
				tc.change(t, cacheFile, bootFile)
			}
			got, ok := cached(tc.lookup)
			if ok != tc.hit {
				t.Fatalf("cached = %v, want %v", ok, tc.hit)
			}
			if tc.hit && (got.Version != caps.Version || got.Features != caps.Features || got.Path != caps.Path) {
				t.Errorf("cached %+v, want %+v", got, caps)
			}
		})
	}
}

// Without a writable /run (or a boot id) only the in-memory cache works;
// nothing fails.
func TestCapabilitiesCacheUnwritable(t *testing.T) {
	for _, boot := range []string{"b1", ""} {
		_, bootFile := useCapsCache(t, boot)
		capsCacheFile = filepath.Join(bootFile, "not-a-dir", "caps.json")
		key := probeKey{path: "/criu", ino: 7}
		remember(key, &Capabilities{Path: "/criu"})
		if _, ok := cached(key); !ok {
			t.Errorf("boot %q: not cached in memory", boot)
		}
		forgetAll()
		if _, ok := cached(key); ok {
			t.Errorf("boot %q: cached without a file", boot)
		}
	}
}
