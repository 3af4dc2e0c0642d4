package container

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ckpt-dev/ckpt/hooks"
	"github.com/ckpt-dev/ckpt/runtime/criu"
	"github.com/opencontainers/runc/libcontainer/configs"
)

// TestCheckpointStages: a checkpoint's stages run the caller's OnStage,
// then the action scripts runc recorded in the container's labels at
// create; SkipHooks leaves the scripts out.
func TestCheckpointStages(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "log")
	script := filepath.Join(dir, "s.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho \"script $CRTOOLS_SCRIPT_ACTION $CRTOOLS_INIT_PID\" >> "+log+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := &configs.Config{Labels: []string{"bundle=/b", hooks.ActionScriptAnnotation + "=" + script}}
	refuse := errors.New("refused")
	tests := []struct {
		name    string
		opts    CheckpointOptions
		want    string
		wantErr error
	}{
		{name: "caller then script", opts: CheckpointOptions{ID: "c", OnStage: record(log, nil)}, want: "caller post-dump\nscript post-dump 42\n"},
		{name: "a refusing caller stops the stage", opts: CheckpointOptions{ID: "c", OnStage: record(log, refuse)}, want: "caller post-dump\n", wantErr: refuse},
		{name: "SkipHooks", opts: CheckpointOptions{ID: "c", SkipHooks: true, OnStage: record(log, nil)}, want: "caller post-dump\n"},
		{name: "no OnStage", opts: CheckpointOptions{ID: "c"}, want: "script post-dump 42\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			os.Remove(log)
			onStage, err := checkpointStages(tt.opts, cfg, dir)
			if err != nil {
				t.Fatal(err)
			}
			if err := onStage(context.Background(), criu.PostDump, 42); !errors.Is(err, tt.wantErr) {
				t.Fatalf("got %v, want %v", err, tt.wantErr)
			}
			if got, _ := os.ReadFile(log); string(got) != tt.want {
				t.Fatalf("ran %q, want %q", got, tt.want)
			}
		})
	}

	bad := &configs.Config{Labels: []string{hooks.ActionScriptAnnotation + "=relative.sh"}}
	if _, err := checkpointStages(CheckpointOptions{ID: "c"}, bad, dir); err == nil || !strings.Contains(err.Error(), "absolute") {
		t.Fatalf("a relative script: %v", err)
	}
}

func record(log string, answer error) func(context.Context, criu.Stage, int) error {
	return func(_ context.Context, s criu.Stage, _ int) error {
		f, err := os.OpenFile(log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		f.WriteString("caller " + string(s) + "\n")
		return answer
	}
}
