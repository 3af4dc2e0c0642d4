package container

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
)

func TestLeftover(t *testing.T) {
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		record   func(t *testing.T, wd string)
		wantLeft bool
		wantErr  error
	}{
		{"nothing", nil, false, nil},
		{"work dir without a record", func(t *testing.T, wd string) { os.MkdirAll(wd, 0o700) }, true, nil},
		{"owner alive", func(t *testing.T, wd string) {
			os.MkdirAll(wd, 0o700)
			if err := writeRecord(wd, &restoreRecord{}); err != nil {
				t.Fatal(err)
			}
		}, false, ErrRestoreInProgress},
		{"owner dead", func(t *testing.T, wd string) {
			os.MkdirAll(wd, 0o700)
			rec := &restoreRecord{OwnerPid: dead.Process.Pid, OwnerStart: 1}
			writeRecordAs(t, wd, rec)
		}, true, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			workRoot = t.TempDir()
			root := t.TempDir()
			wd, err := WorkDir(root, "c1")
			if err != nil {
				t.Fatal(err)
			}
			if tc.record != nil {
				tc.record(t, wd)
			}
			left, err := Leftover(root, "c1")
			if !errors.Is(err, tc.wantErr) || left != tc.wantLeft {
				t.Fatalf("Leftover = %v, %v; want %v, %v", left, err, tc.wantLeft, tc.wantErr)
			}
			if tc.wantErr != nil && !errors.Is(err, errdefs.ErrFailedPrecondition) {
				t.Errorf("%v is not a failed precondition", err)
			}
		})
	}
}

// writeRecordAs writes rec as it is (writeRecord makes us the owner).
func writeRecordAs(t *testing.T, wd string, rec *restoreRecord) {
	t.Helper()
	b, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(wd, recordFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// RemoveLeftover removes the dead restore's work dir and state dir, and
// leaves a live one's alone.
func TestRemoveLeftover(t *testing.T) {
	workRoot = t.TempDir()
	root := t.TempDir()
	wd, _ := WorkDir(root, "c1")
	state := filepath.Join(root, "c1")
	os.MkdirAll(filepath.Join(wd, "criu-root"), 0o700)
	os.MkdirAll(state, 0o700)
	writeRecordAs(t, wd, &restoreRecord{OwnerPid: 1 << 22, OwnerStart: 1, StateDir: state, LogFile: filepath.Join(t.TempDir(), "restore.log")})
	if err := RemoveLeftover(context.Background(), root, "c1"); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{wd, state} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s left (%v)", p, err)
		}
	}

	os.MkdirAll(wd, 0o700)
	writeRecord(wd, &restoreRecord{StateDir: state})
	os.MkdirAll(state, 0o700)
	if err := RemoveLeftover(context.Background(), root, "c1"); !errors.Is(err, ErrRestoreInProgress) {
		t.Fatalf("RemoveLeftover of a live restore: %v", err)
	}
	if _, err := os.Stat(state); err != nil {
		t.Errorf("a live restore's state dir was touched: %v", err)
	}
}

func TestNotStarted(t *testing.T) {
	for _, tc := range []struct {
		name string
		fifo bool
		want error
	}{{"started", false, nil}, {"created", true, errdefs.ErrFailedPrecondition}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.fifo {
				os.WriteFile(filepath.Join(dir, "exec.fifo"), nil, 0o600)
			}
			if err := notStarted("c1", dir); !errors.Is(err, tc.want) {
				t.Fatalf("notStarted = %v, want %v", err, tc.want)
			}
		})
	}
}
