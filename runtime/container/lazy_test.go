package container

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"github.com/ckpt-dev/ckpt/runtime/plan"
)

func TestEnsureLazyPipes(t *testing.T) {
	need := lazyPipeBytes()
	tests := []struct {
		name     string
		cur      int
		cap      bool
		readOnly bool
		want     int
		wantErr  string
	}{
		{name: "with CAP_SYS_RESOURCE nothing changes", cur: 1 << 20, cap: true, want: 1 << 20},
		{name: "large enough", cur: need, want: need},
		{name: "larger is kept", cur: 2 * need, want: 2 * need},
		{name: "default is raised", cur: 1 << 20, want: need},
		{name: "cannot raise", readOnly: true, wantErr: "fs.pipe-max-size is 65536"},
	}
	for _, tt := range tests {
		dir := t.TempDir()
		if err := os.MkdirAll(filepath.Join(dir, "fs"), 0o755); err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(dir, "fs", "pipe-max-size")
		if err := os.WriteFile(f, []byte(strconv.Itoa(tt.cur)+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if tt.readOnly {
			// A read-only sysctl holding one number (65536): root cannot
			// write it either.
			os.Remove(f)
			if err := os.Symlink("/proc/sys/kernel/ngroups_max", f); err != nil {
				t.Fatal(err)
			}
		}
		err := ensureLazyPipes(context.Background(), dir, tt.cap)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%s: error %v, want one saying %q", tt.name, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		data, _ := os.ReadFile(f)
		if got, _ := strconv.Atoi(strings.TrimSpace(string(data))); got != tt.want {
			t.Errorf("%s: pipe-max-size %d, want %d", tt.name, got, tt.want)
		}
	}
}

func TestLazyPipeBytes(t *testing.T) {
	// CRIU asks for 819 pages of 4 KiB; the kernel rounds to 1024.
	if os.Getpagesize() == 4096 && lazyPipeBytes() != 4<<20 {
		t.Errorf("lazyPipeBytes %d, want 4 MiB", lazyPipeBytes())
	}
}

func TestBindPageServer(t *testing.T) {
	own := "/etc/criu/own.conf"
	tests := []struct {
		name       string
		ps         *plan.PageServer
		configFile *string
		want       string // config file content; "" none written
	}{
		{name: "not lazy"},
		{name: "every address asked for", ps: &plan.PageServer{Port: 1}},
		{name: "an address", ps: &plan.PageServer{Host: "10.0.0.1", Port: 1}, want: "address 10.0.0.1\n"},
		{name: "the container's own config file", ps: &plan.PageServer{Host: "10.0.0.1", Port: 1}, configFile: &own},
	}
	for _, tt := range tests {
		dir := t.TempDir()
		o := &rpc.CriuOpts{ConfigFile: tt.configFile}
		if err := bindPageServer(context.Background(), o, tt.ps, dir); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		data, err := os.ReadFile(filepath.Join(dir, lazyConfigFile))
		if tt.want == "" {
			if err == nil {
				t.Errorf("%s: config file written: %q", tt.name, data)
			}
			if o.ConfigFile != tt.configFile {
				t.Errorf("%s: config file changed to %q", tt.name, o.GetConfigFile())
			}
			continue
		}
		if string(data) != tt.want || o.GetConfigFile() != filepath.Join(dir, lazyConfigFile) {
			t.Errorf("%s: %q in %q, want %q", tt.name, data, o.GetConfigFile(), tt.want)
		}
	}
}
