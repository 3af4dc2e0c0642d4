package image

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/stats"
	"golang.org/x/sys/unix"
)

func dirFile(t *testing.T, dir string) *os.File {
	t.Helper()
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func TestReadDescriptors(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string)
		want  []string
		err   string
	}{
		{
			name: "valid",
			setup: func(t *testing.T, dir string) {
				write(t, dir, DescriptorsFile, `["/dev/null","pipe:[12]","pipe:[13]"]`)
			},
			want: []string{"/dev/null", "pipe:[12]", "pipe:[13]"},
		},
		{name: "missing", setup: func(*testing.T, string) {}, err: "no such file"},
		{
			name: "FIFO must not block",
			setup: func(t *testing.T, dir string) {
				if err := unix.Mkfifo(filepath.Join(dir, DescriptorsFile), 0o600); err != nil {
					t.Fatal(err)
				}
			},
			err: "not a regular file",
		},
		{
			name: "symlink to a real file",
			setup: func(t *testing.T, dir string) {
				write(t, dir, "elsewhere", `["a","b","c"]`)
				if err := os.Symlink(filepath.Join(dir, "elsewhere"), filepath.Join(dir, DescriptorsFile)); err != nil {
					t.Fatal(err)
				}
			},
			err: "symlink",
		},
		{
			name: "symlink to /dev/zero",
			setup: func(t *testing.T, dir string) {
				if err := os.Symlink("/dev/zero", filepath.Join(dir, DescriptorsFile)); err != nil {
					t.Fatal(err)
				}
			},
			err: "symlink",
		},
		{
			name:  "directory",
			setup: func(t *testing.T, dir string) { os.Mkdir(filepath.Join(dir, DescriptorsFile), 0o700) },
			err:   "not a regular file",
		},
		{
			name: "huge",
			setup: func(t *testing.T, dir string) {
				write(t, dir, DescriptorsFile, `["`+strings.Repeat("a", MaxDescriptorsSize)+`","b","c"]`)
			},
			err: "more than",
		},
		{name: "two entries", setup: func(t *testing.T, dir string) { write(t, dir, DescriptorsFile, `["a","b"]`) }, err: "exactly 3"},
		{name: "four entries", setup: func(t *testing.T, dir string) { write(t, dir, DescriptorsFile, `["a","b","c","d"]`) }, err: "exactly 3"},
		{name: "not strings", setup: func(t *testing.T, dir string) { write(t, dir, DescriptorsFile, `[1,2,3]`) }, err: "not a string"},
		{name: "object", setup: func(t *testing.T, dir string) { write(t, dir, DescriptorsFile, `{"0":"a"}`) }, err: "not a JSON array"},
		{name: "NUL byte", setup: func(t *testing.T, dir string) { write(t, dir, DescriptorsFile, `["a\u0000b","b","c"]`) }, err: "not a valid link"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.setup(t, dir)
			done := make(chan struct{})
			var got []string
			var err error
			go func() { got, err = ReadDescriptors(dirFile(t, dir)); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("ReadDescriptors blocked")
			}
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %v, %v", got, err)
			}
		})
	}
}

func TestDescriptorsRoundTrip(t *testing.T) {
	dir := t.TempDir()
	links := []string{"/dev/null", "pipe:[1]", "/var/log/x.log"}
	if err := WriteDescriptors(dir, links); err != nil {
		t.Fatal(err)
	}
	got, err := ReadDescriptors(dirFile(t, dir))
	if err != nil || !reflect.DeepEqual(got, links) {
		t.Fatalf("got %v %v", got, err)
	}
	if WriteDescriptors(dir, links[:2]) == nil {
		t.Error("two links written")
	}
}

func sampleMetadata() *Metadata {
	return &Metadata{
		FormatVersion: 1, Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		ContainerID: "c1", CRIUVersion: "4.1.1", CRIUVersionInt: 40101, RuncVersion: "1.5.2",
		Options:           Options{TCPEstablished: true, FileLocks: true, EmptyNetNS: true, CgroupsMode: "soft", ExternalNetNS: true},
		Terminal:          true,
		WindowSize:        &WindowSize{Rows: 40, Cols: 120},
		SpecDigest:        "sha256:abc",
		Stdio:             []Stdio{{Fd: 0, Link: "/dev/pts/0"}, {Fd: 1, Link: "/log", External: "file[1b:2a]"}, {Fd: 2, Link: "pipe:[3]"}},
		FreshTmpfs:        []FreshTmpfs{{Key: "ckpt-tmpfs:/proc/acpi", Mountpoints: []string{"/proc/acpi", "/sys/firmware"}, Flags: "ro,relatime", Data: "size=4k"}},
		CgroupHierarchies: []string{"cpu,cpuacct", "systemd", "unified"},
		Stats:             &DumpStats{FrozenTimeUs: 1000, PagesWritten: 12},
		Timings:           Timings{DumpMs: 30, TotalMs: 50},
	}
}

func TestMetadataRoundTrip(t *testing.T) {
	dir := t.TempDir()
	m := sampleMetadata()
	if err := WriteMetadata(dir, m); err != nil {
		t.Fatal(err)
	}
	got, err := ReadMetadata(dirFile(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, m) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, m)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temp files left: %v", entries)
	}

	// A superblock's device number means nothing after the checkpoint.
	m.FreshTmpfs[0].Major, m.FreshTmpfs[0].Minor = 0, 54
	data, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), "54") {
		t.Errorf("device numbers recorded: %s", data)
	}
}

// TestMetadataFormatVersion: an image is written with the oldest version
// that holds it; what a version-1 reader would restore wrong needs 2.
func TestMetadataFormatVersion(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Metadata)
		want int
	}{
		{name: "nothing new", edit: func(*Metadata) {}, want: 1},
		{name: "criu in the network namespace", edit: func(m *Metadata) { m.Options.CRIUInNetNS = true }, want: 2},
		{name: "a tmpfs with inodes", edit: func(m *Metadata) {
			m.FreshTmpfs[0].Entries = []TmpfsEntry{{Path: "null", Type: "char", Mode: 0o666, Major: 1, Minor: 3}}
		}, want: 2},
		{name: "memory left at a page server", edit: func(m *Metadata) { m.Options.LazyPages = true }, want: 3},
	}
	for _, tt := range tests {
		m := sampleMetadata()
		m.FormatVersion = 0
		tt.edit(m)
		dir := t.TempDir()
		if err := WriteMetadata(dir, m); err != nil {
			t.Fatal(err)
		}
		got, err := ReadMetadataPath(dir)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if got.FormatVersion != tt.want {
			t.Errorf("%s: format version %d, want %d", tt.name, got.FormatVersion, tt.want)
		}
	}
}

func TestMetadataErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadMetadataPath(dir); !errors.Is(err, ErrNoMetadata) {
		t.Errorf("missing: %v", err)
	}
	if err := unix.Mkfifo(filepath.Join(dir, MetadataFile), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadMetadataPath(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("FIFO: %v", err)
	}
	os.Remove(filepath.Join(dir, MetadataFile))
	for name, content := range map[string]string{
		"future version": `{"format_version": 99}`,
		"no version":     `{}`,
		"bad fd":         `{"format_version": 1, "stdio": [{"fd": 7}]}`,
		"not json":       `ckpt`,
	} {
		write(t, dir, MetadataFile, content)
		if _, err := ReadMetadataPath(dir); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
}

func TestPendingMetadata(t *testing.T) {
	dir := t.TempDir()
	m := sampleMetadata()
	p, err := WritePending(dir, m)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ReadMetadataPath(dir); !errors.Is(err, ErrNoMetadata) {
		t.Fatal("a pending metadata file counts as complete")
	}
	m.Stats = &DumpStats{PagesWritten: 99}
	if err := p.Commit(m); err != nil {
		t.Fatal(err)
	}
	got, err := ReadMetadataPath(dir)
	if err != nil || got.Stats.PagesWritten != 99 {
		t.Fatalf("committed %+v %v", got, err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("pending file left: %v", entries)
	}
}

func statsImage(t *testing.T, e *stats.StatsEntry) []byte {
	t.Helper()
	payload, err := e.MarshalVT()
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, stats.PayloadOffset, stats.PayloadOffset+len(payload))
	binary.LittleEndian.PutUint32(b[stats.PrimaryMagicOffset:], stats.ImgServiceMagic)
	binary.LittleEndian.PutUint32(b[stats.SecondaryMagicOffset:], stats.StatsMagic)
	binary.LittleEndian.PutUint32(b[stats.SizeOffset:], uint32(len(payload)))
	return append(b, payload...)
}

func TestParseDumpStats(t *testing.T) {
	u32 := func(v uint32) *uint32 { return &v }
	u64 := func(v uint64) *uint64 { return &v }
	img := statsImage(t, &stats.StatsEntry{Dump: &stats.DumpStatsEntry{
		FreezingTime: u32(10), FrozenTime: u32(2000), MemdumpTime: u32(30), MemwriteTime: u32(40),
		PagesScanned: u64(500), PagesSkippedParent: u64(0), PagesWritten: u64(120), PagesLazy: u64(0),
	}})
	got, err := ParseDumpStats(img)
	if err != nil {
		t.Fatal(err)
	}
	if got.FrozenTimeUs != 2000 || got.PagesWritten != 120 || got.PagesScanned != 500 {
		t.Errorf("stats %+v", got)
	}
	bad := append([]byte(nil), img...)
	binary.LittleEndian.PutUint32(bad[stats.SizeOffset:], 1<<20)
	for name, data := range map[string][]byte{
		"empty": nil, "short": img[:6], "truncated payload": bad,
		"bad magic": append([]byte{1, 2, 3, 4}, img[4:]...),
		"no dump":   statsImage(t, &stats.StatsEntry{}),
	} {
		if _, err := ParseDumpStats(data); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
}

func TestInspect(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "pages-1.img", strings.Repeat("x", 4096))
	write(t, dir, DescriptorsFile, `["/dev/null","/dev/null","/dev/null"]`)
	info, err := Inspect(dir)
	if err != nil {
		t.Fatal(err)
	}
	if info.Complete || !strings.Contains(info.Problem, "incomplete") || info.TotalSize < 4096 || len(info.Files) != 2 {
		t.Errorf("without metadata: %+v", info)
	}
	if err := WriteMetadata(dir, sampleMetadata()); err != nil {
		t.Fatal(err)
	}
	info, err = Inspect(dir)
	if err != nil || !info.Complete || info.Metadata.ContainerID != "c1" || len(info.Descriptors) != 3 {
		t.Errorf("with metadata: %+v %v", info, err)
	}
	if _, err := Inspect(filepath.Join(dir, "nope")); err == nil {
		t.Error("missing dir inspected")
	}
}

func write(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
