package bootcache

import (
	"os"
	"path/filepath"
	"testing"
)

type answer struct {
	Version string
	Lazy    bool
}

// newCache points a cache at temp files, boot id boot ("" for none).
func newCache(t *testing.T, boot string) *Cache[answer] {
	t.Helper()
	dir := t.TempDir()
	c := &Cache[answer]{File: filepath.Join(dir, "run", "ckpt", "answer.json"), BootIDFile: filepath.Join(dir, "boot_id")}
	if boot != "" {
		if err := os.WriteFile(c.BootIDFile, []byte(boot+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func TestAcrossProcesses(t *testing.T) {
	bin := Binary{Path: "/usr/local/sbin/criu", Dev: 1, Ino: 2, MtimeNs: 3, Size: 4}
	want := answer{Version: "4.2.1", Lazy: true}
	tests := []struct {
		name string
		// change runs between Store (one process) and Load (the next).
		change func(t *testing.T, c *Cache[answer])
		lookup Binary
		hit    bool
	}{
		{name: "same binary, same boot", lookup: bin, hit: true},
		{name: "rebooted", lookup: bin, change: func(t *testing.T, c *Cache[answer]) {
			os.WriteFile(c.BootIDFile, []byte("another-boot\n"), 0o644)
		}},
		{name: "binary replaced", lookup: Binary{Path: bin.Path, Dev: 1, Ino: 2, MtimeNs: 99, Size: 4}},
		{name: "other binary", lookup: Binary{Path: "/usr/sbin/criu", Dev: 1, Ino: 2, MtimeNs: 3, Size: 4}},
		{name: "corrupt file", lookup: bin, change: func(t *testing.T, c *Cache[answer]) {
			os.WriteFile(c.File, []byte(`{"boot_id": "b1", "path": `), 0o600)
		}},
		{name: "no value", lookup: bin, change: func(t *testing.T, c *Cache[answer]) {
			os.WriteFile(c.File, []byte(`{"boot_id": "b1", "path": "/usr/local/sbin/criu", "dev": 1, "ino": 2, "mtime_ns": 3, "size": 4}`), 0o600)
		}},
		{name: "no boot id", lookup: bin, change: func(t *testing.T, c *Cache[answer]) {
			os.Remove(c.BootIDFile)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newCache(t, "b1")
			c.Store(bin, want)
			if _, err := os.Stat(c.File); err != nil {
				t.Fatalf("nothing written: %v", err)
			}
			c.Forget()
			if tc.change != nil {
				tc.change(t, c)
			}
			got, ok := c.Load(tc.lookup)
			if ok != tc.hit {
				t.Fatalf("Load = %v, want %v", ok, tc.hit)
			}
			if tc.hit && got != want {
				t.Errorf("Load = %+v, want %+v", got, want)
			}
		})
	}
}

// Without a writable file (or a boot id) only the in-memory cache works;
// nothing fails.
func TestUnwritable(t *testing.T) {
	for _, boot := range []string{"b1", ""} {
		c := newCache(t, boot)
		c.File = filepath.Join(c.BootIDFile, "not-a-dir", "answer.json")
		bin := Binary{Path: "/criu", Ino: 7}
		c.Store(bin, answer{Version: "1"})
		if _, ok := c.Load(bin); !ok {
			t.Errorf("boot %q: not cached in memory", boot)
		}
		c.Forget()
		if _, ok := c.Load(bin); ok {
			t.Errorf("boot %q: cached without a file", boot)
		}
	}
}

func TestIdentify(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bin")
	if err := os.WriteFile(p, []byte("v1"), 0o755); err != nil {
		t.Fatal(err)
	}
	a, err := Identify(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("v2 longer"), 0o755); err != nil {
		t.Fatal(err)
	}
	b, _ := Identify(p)
	if a == b {
		t.Fatalf("a rewritten file keeps its identity: %+v", a)
	}
	if _, err := Identify(filepath.Join(t.TempDir(), "nope")); err == nil {
		t.Fatal("a missing file identified")
	}
}
