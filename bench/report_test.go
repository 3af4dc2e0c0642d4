package main

import (
	"strings"
	"testing"
	"time"
)

func TestSpread(t *testing.T) {
	tests := []struct {
		in   []float64
		want Spread
	}{
		{nil, Spread{}},
		{[]float64{3}, Spread{Min: 3, Median: 3, Max: 3, N: 1}},
		{[]float64{5, 1, 3}, Spread{Min: 1, Median: 3, Max: 5, N: 3}},
		{[]float64{4, 1, 2, 10}, Spread{Min: 1, Median: 3, Max: 10, N: 4}},
	}
	for _, tc := range tests {
		if got := spread(tc.in); got != tc.want {
			t.Errorf("spread(%v) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func TestMarkdown(t *testing.T) {
	ms := time.Millisecond
	samples := []Sample{
		{Target: targetRuncShim, Workload: "idle", Rep: 1, Checkpoint: 100 * ms, Restore: 200 * ms},
		{Target: targetRuncShim, Workload: "idle", Rep: 2, Checkpoint: 120 * ms, Restore: 220 * ms},
		{Target: targetCkptShim, Workload: "idle", Rep: 1, Checkpoint: 150 * ms, Restore: 110 * ms},
		{Target: targetCkptShim, Workload: "idle", Rep: 2, Checkpoint: 180 * ms, Restore: 330 * ms, Err: "criu said\nno"},
		{Target: targetCkptShim, Workload: "idle", Rep: 3, Checkpoint: 180 * ms, Restore: 330 * ms},
	}
	md := markdown(samples, "env")
	tests := []struct {
		name, want string
	}{
		{"summary row with the ratio of medians (165/110)", "| idle | checkpoint | 110 | 165 | 1.50 |"},
		{"restore ratio (220/210)", "| idle | restore | 210 | 220 | 1.05 |"},
		{"summary of minima (150/100)", "## Summary (minima, ms)"},
		{"checkpoint ratio of minima (150/100)", "| idle | checkpoint | 100 | 150 | 1.50 |"},
		{"restore ratio of minima (110/200)", "| idle | restore | 200 | 110 | 0.55 |"},
		{"spread of a figure", "| checkpoint ms | 100 / 110 / 120 | 150 / 165 / 180 | 1.50 |"},
		{"failed run on one line", "- idle / ckpt-shim rep 2: criu said no"},
		{"no ratio against an absent target", "ckpt-shim / runc-shim |\n"},
	}
	for _, tc := range tests {
		if !strings.Contains(md, tc.want) {
			t.Errorf("%s: no %q in\n%s", tc.name, tc.want, md)
		}
	}
	if strings.Contains(md, "raw-criu") {
		t.Errorf("a ratio against raw-criu without raw-criu samples:\n%s", md)
	}
}
