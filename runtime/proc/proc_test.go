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

func TestParseStat(t *testing.T) {
	// The command may hold spaces and parentheses.
	line := "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 200"
	st, err := parseStat(line)
	if err != nil || st.State != 'S' || st.StartTime != 987654 {
		t.Fatalf("%+v %v", st, err)
	}
	for _, bad := range []string{"", "1 (x) S 1 2", "1 x S"} {
		if _, err := parseStat(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	self, err := ReadStat(os.Getpid())
	if err != nil || !Alive(os.Getpid(), self.StartTime) || Alive(os.Getpid(), self.StartTime+1) {
		t.Errorf("self: %+v %v", self, err)
	}
}
