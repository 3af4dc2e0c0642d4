package shim

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/containerd/api/types/runc/options"
)

func TestCtrdCheckpointDir(t *testing.T) {
	xdg := t.TempDir()
	tmp := t.TempDir()
	mk := func(parent, name string) string {
		p := filepath.Join(parent, name)
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
		return p
	}
	inXDG := mk(xdg, "ctrd-checkpoint123456")
	inTmp := mk(tmp, "ctrd-checkpoint42")
	named := mk(xdg, "ctrd-checkpoint")    // the CRI plugin's name, no digits
	other := mk(xdg, "ctrd-checkpointab1") // not MkdirTemp's digits
	link := filepath.Join(xdg, "ctrd-checkpoint777")
	if err := os.Symlink(inXDG, link); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(xdg, "ctrd-checkpoint888")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	withXDG := env(map[string]string{"XDG_RUNTIME_DIR": xdg, "TMPDIR": tmp})
	withTmp := env(map[string]string{"TMPDIR": tmp})
	tests := []struct {
		name       string
		checkpoint string
		opts       *options.Options
		getenv     func(string) string
		want       string
	}{
		{"containerd's dir in XDG_RUNTIME_DIR", inXDG, &options.Options{}, withXDG, inXDG},
		{"trailing slash", inXDG + "/", &options.Options{}, withXDG, inXDG + "/"},
		{"containerd's dir in TMPDIR", inTmp, &options.Options{}, withTmp, inTmp},
		{"TMPDIR ignored when XDG_RUNTIME_DIR is set", inTmp, &options.Options{}, withXDG, ""},
		{"the client named the dir", inXDG, &options.Options{CriuImagePath: inXDG}, withXDG, ""},
		{"no random digits", named, &options.Options{}, withXDG, ""},
		{"not digits", other, &options.Options{}, withXDG, ""},
		{"symlink", link, &options.Options{}, withXDG, ""},
		{"not a dir", file, &options.Options{}, withXDG, ""},
		{"gone", filepath.Join(xdg, "ctrd-checkpoint999"), &options.Options{}, withXDG, ""},
		{"no checkpoint", "", &options.Options{}, withXDG, ""},
		{"elsewhere", filepath.Join(t.TempDir(), "ctrd-checkpoint1"), &options.Options{}, withXDG, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ctrdCheckpointDir(tc.checkpoint, tc.opts, tc.getenv); got != tc.want {
				t.Errorf("ctrdCheckpointDir(%q) = %q, want %q", tc.checkpoint, got, tc.want)
			}
		})
	}
}
