package container

import (
	"testing"

	"github.com/ckpt-dev/ckpt/hooks"
	"github.com/opencontainers/runc/libcontainer/configs"
)

// TestDeclaresActionScripts: criu joins a loopback-only namespace (and
// CRIU then has no network-lock stage) only where no script expects one.
func TestDeclaresActionScripts(t *testing.T) {
	tests := []struct {
		name   string
		labels []string
		skip   bool
		want   bool
	}{
		{name: "none", labels: []string{"bundle=/b"}},
		{name: "declared", labels: []string{"bundle=/b", hooks.ActionScriptAnnotation + "=/s.sh"}, want: true},
		{name: "declared empty", labels: []string{hooks.ActionScriptAnnotation + "="}},
		// The checkpoint fails on it later; no reason to change the dump.
		{name: "malformed", labels: []string{hooks.ActionScriptAnnotation + "=rel.sh"}, want: true},
		{name: "hooks skipped", labels: []string{hooks.ActionScriptAnnotation + "=/s.sh"}, skip: true},
	}
	for _, tt := range tests {
		if got := declaresActionScripts(&configs.Config{Labels: tt.labels}, tt.skip); got != tt.want {
			t.Errorf("%s: %t, want %t", tt.name, got, tt.want)
		}
	}
}
