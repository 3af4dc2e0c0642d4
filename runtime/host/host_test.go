package host

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ckpt-dev/ckpt/runtime/criu"
	"github.com/moby/sys/mountinfo"
)

func fakeRunc(t *testing.T, output string, exit int) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "runc")
	script := "#!/bin/sh\ncat <<'X'\n" + output + "\nX\nexit " + string(rune('0'+exit)) + "\n"
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRuncVersion(t *testing.T) {
	cases := []struct {
		name, out string
		exit      int
		want      string
		wantErr   string
	}{
		{"release", "runc version 1.5.2\ncommit: v1.5.2-0-g1234\nspec: 1.3.0\ngo: go1.26.8", 0, "1.5.2", ""},
		{"rc", "runc version 1.6.0-rc.1\nspec: 1.3.0", 0, "1.6.0-rc.1", ""},
		{"garbage", "hello", 0, "", "printed no version"},
		{"fails", "", 1, "", "--version"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := RuncVersion(context.Background(), fakeRunc(t, tc.out, tc.exit))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestCgroupModeIsKnown(t *testing.T) {
	switch m := CgroupMode(); m {
	case "v1", "v2", "hybrid (v1 + v2)":
	default:
		t.Errorf("CgroupMode() = %q", m)
	}
}

func TestSocketCheck(t *testing.T) {
	for _, tc := range []struct {
		kernel string
		v      criu.Version
		ok     bool
	}{
		{"6.18.44-fc", criu.Version{Major: 4, Minor: 2, Sublevel: 1}, true},
		{"6.18.44-fc", criu.Version{Major: 4, Minor: 1, Sublevel: 1}, false},
		{"6.16.0", criu.Version{Major: 4, Minor: 1}, false},
		{"6.15.9", criu.Version{Major: 4, Minor: 1}, true},
		{"7.0.1", criu.Version{Major: 4, Minor: 1}, false},
		{"garbage", criu.Version{Major: 4, Minor: 1}, true},
	} {
		if got := socketCheck(tc.kernel, tc.v); got.OK != tc.ok {
			t.Errorf("kernel %s, CRIU %s: ok=%v (%s), want %v", tc.kernel, tc.v, got.OK, got.Reason, tc.ok)
		}
	}
}

func TestKdatCacheCheck(t *testing.T) {
	if got := kdatCacheCheck("/dev/shm"); !got.OK {
		t.Errorf("/dev/shm is a tmpfs, the check says %+v", got)
	}
	if got := kdatCacheCheck("/proc"); got.OK || !got.Optional {
		t.Errorf("/proc is no tmpfs, the check says %+v", got)
	}
}

func TestDynmodsCheck(t *testing.T) {
	off := []*mountinfo.Info{
		{Mountpoint: "/sys/fs/cgroup/pids", FSType: "cgroup", VFSOptions: "rw,pids"},
		{Mountpoint: "/sys/fs/cgroup/unified", FSType: "cgroup2", VFSOptions: "rw,nsdelegate"},
	}
	if got := dynmodsCheck(off); got.OK || !got.Optional || !strings.Contains(got.Reason, "favordynmods") {
		t.Errorf("without favordynmods: %+v", got)
	}
	on := append(off, &mountinfo.Info{Mountpoint: "/sys/fs/cgroup", FSType: "cgroup2", VFSOptions: "rw,nsdelegate,favordynmods"})
	if got := dynmodsCheck(on); !got.OK || !strings.Contains(got.Value, "/sys/fs/cgroup") {
		t.Errorf("with favordynmods: %+v", got)
	}
}

func TestTCPHashCheck(t *testing.T) {
	dir := t.TempDir()
	write := func(name, v string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name, path string
		ok         bool
		value      string
		reason     string
	}{
		{name: "shared", path: write("shared", "0\n"), value: "no", reason: "tcp_child_ehash_entries=16384"},
		{name: "own", path: write("own", "16384\n"), ok: true, value: "yes (16384 buckets for new namespaces)"},
		{name: "old kernel", path: filepath.Join(dir, "missing"), value: "unavailable", reason: ">= 6.1"},
	}
	for _, tt := range tests {
		got := tcpHashCheck(tt.path)
		if got.OK != tt.ok || got.Value != tt.value || !got.Optional || !strings.Contains(got.Reason, tt.reason) {
			t.Errorf("%s: %+v", tt.name, got)
		}
		if tt.ok && got.Reason != "" {
			t.Errorf("%s: a reason on an ok item: %q", tt.name, got.Reason)
		}
	}
}
