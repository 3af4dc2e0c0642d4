package container

import (
	"errors"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestFindStrays(t *testing.T) {
	for _, tc := range []struct {
		name   string
		init   int
		parent map[int]int
		want   []int
	}{
		{"init alone", 10, map[int]int{10: 1}, nil},
		{"children and grandchildren", 10, map[int]int{10: 1, 11: 10, 12: 11, 13: 10}, nil},
		{"exec'd process reparented outside", 10, map[int]int{10: 1, 11: 10, 20: 1}, []int{20}},
		{"exec'd process and its child", 10, map[int]int{10: 1, 20: 5, 21: 20}, []int{20, 21}},
		{"cycle from a reused pid", 10, map[int]int{10: 1, 30: 31, 31: 30}, []int{30, 31}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := findStrays(tc.init, tc.parent)
			var pids []int
			for _, s := range got {
				pids = append(pids, s.Pid)
			}
			if len(pids) != len(tc.want) {
				t.Fatalf("strays = %v, want %v", pids, tc.want)
			}
			for i := range pids {
				if pids[i] != tc.want[i] {
					t.Fatalf("strays = %v, want %v", pids, tc.want)
				}
			}
		})
	}
}

func TestErrOutsideTree(t *testing.T) {
	var strays []strayProcess
	for i := range 7 {
		strays = append(strays, strayProcess{Pid: 100 + i, Command: "sh -c work"})
	}
	err := errOutsideTree("web", strays)
	if !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("error is not a failed precondition: %v", err)
	}
	msg := err.Error()
	for _, want := range []string{`"web"`, "7 process(es)", "pid 100 (sh -c work)", "and 2 more", "would be lost"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
}
