package proc

import (
	"os"
	"os/exec"
	"slices"
	"testing"
)

func TestChildren(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	if got := Children(os.Getpid()); !slices.Contains(got, cmd.Process.Pid) {
		t.Fatalf("Children(%d) = %v, want it to hold %d", os.Getpid(), got, cmd.Process.Pid)
	}
	if got := Children(cmd.Process.Pid); len(got) != 0 {
		t.Fatalf("sleep has children %v", got)
	}
	if got := Children(-1); got != nil {
		t.Fatalf("Children(-1) = %v", got)
	}
}
