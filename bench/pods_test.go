package main

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestSettleTimes(t *testing.T) {
	tests := []struct {
		in   string
		want []time.Duration
		err  bool
	}{
		{in: "20s,150s", want: []time.Duration{20 * time.Second, 150 * time.Second}},
		{in: " 5s ", want: []time.Duration{5 * time.Second}},
		{in: "150s,20s", err: true},
		{in: "soon", err: true},
		{in: "", err: true},
	}
	for _, tt := range tests {
		got, err := settleTimes(tt.in)
		if tt.err {
			if err == nil {
				t.Errorf("settleTimes(%q) = %v, want an error", tt.in, got)
			}
			continue
		}
		if err != nil || len(got) != len(tt.want) {
			t.Errorf("settleTimes(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			continue
		}
		for i := range got {
			if got[i] != tt.want[i] {
				t.Errorf("settleTimes(%q) = %v, want %v", tt.in, got, tt.want)
			}
		}
	}
}

func TestReadPSS(t *testing.T) {
	m, err := readPSS(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if m.Pss <= 0 || m.Rss < m.Pss || m.PssAnon+m.PssFile > m.Pss {
		t.Fatalf("implausible smaps_rollup of this process: %+v", m)
	}
	if _, err := readPSS(-1); err == nil {
		t.Fatal("readPSS of no process: no error")
	}
}

func TestPodsMarkdown(t *testing.T) {
	md := podsMarkdown([]podsResult{
		{After: "20s", Handler: "ckpt", Pods: 10, Containers: 30, Shims: 10, Total: pssOf{Pss: 60 << 20}},
		{After: "20s", Handler: "runc", Pods: 10, Containers: 30, Shims: 10, Total: pssOf{Pss: 61 << 20}, Others: 2},
	}, 10, "env")
	for _, want := range []string{"| 20s | ckpt | 10 | 30 | 10 | 60.0 |", "| 6.0 | 2.0 |", "| 20s | runc | 10 | 30 | 10 | 61.0 |", "| 2 |\n"} {
		if !strings.Contains(md, want) {
			t.Errorf("the table has no %q:\n%s", want, md)
		}
	}
}
