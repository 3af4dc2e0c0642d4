package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPauseReporting(t *testing.T) {
	read := func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			return "<none>"
		}
		return strings.TrimSpace(string(b))
	}
	tests := []struct {
		name, setting, marker string // "" = no such file
		wantDuring, wantAfter string
		wantState             string
	}{
		{name: "reporting on", setting: "9", wantDuring: "11", wantAfter: "9", wantState: "paused for the run (order 9 -> 11)"},
		{name: "reporting off", setting: "11", wantDuring: "11", wantAfter: "11", wantState: "free page reporting off"},
		{name: "after a killed run", setting: "11", marker: "9\n", wantDuring: "11", wantAfter: "9", wantState: "paused for the run (order 9 -> 11)"},
		{name: "no module", wantDuring: "<none>", wantAfter: "<none>", wantState: "no free page reporting"},
	}
	for _, tt := range tests {
		dir := t.TempDir()
		setting, marker := filepath.Join(dir, "order"), filepath.Join(dir, "marker")
		if tt.setting != "" {
			os.WriteFile(setting, []byte(tt.setting+"\n"), 0o644)
		}
		if tt.marker != "" {
			os.WriteFile(marker, []byte(tt.marker), 0o644)
		}
		restore, state := pauseReporting(setting, marker)
		if !strings.Contains(state, tt.wantState) {
			t.Errorf("%s: state %q, want %q", tt.name, state, tt.wantState)
		}
		if got := read(setting); got != tt.wantDuring {
			t.Errorf("%s: during the run the order is %s, want %s", tt.name, got, tt.wantDuring)
		}
		if tt.wantDuring != tt.wantAfter && read(marker) != tt.wantAfter {
			t.Errorf("%s: the marker holds %s during the run, want %s", tt.name, read(marker), tt.wantAfter)
		}
		restore()
		if got := read(setting); got != tt.wantAfter {
			t.Errorf("%s: after the run the order is %s, want %s", tt.name, got, tt.wantAfter)
		}
		if read(marker) != "<none>" {
			t.Errorf("%s: the marker outlived the run", tt.name)
		}
	}
}
