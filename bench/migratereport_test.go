package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestMigrationMarkdown(t *testing.T) {
	ms := time.Millisecond
	samples := []migSample{
		{Mode: modePostCopy, MemMiB: 64, Rep: 1, NotAvailable: "post-copy not implemented"},
		{Mode: modeStopCopy, MemMiB: 64, Rep: 1, Downtime: 100 * ms, Total: 150 * ms, TotalIsCall: true},
		{Mode: modeStopCopy, MemMiB: 64, Rep: 2, Downtime: 300 * ms, Total: 350 * ms, TotalIsCall: true},
		{Mode: modeStopCopy, MemMiB: 64, Rep: 3, Downtime: 200 * ms, Total: 250 * ms, TotalIsCall: true},
		// A wrong result is reported as failed and its times do not count.
		{Mode: modePlainPath, MemMiB: 64, Rep: 1, Downtime: time.Millisecond, Err: "wrong result on the target: check bad page 3"},
	}
	md := migrationMarkdown(samples, 3, "env")
	for _, want := range []string{
		"| 64 | post-copy | not available: post-copy not implemented | – | 0 | 0 |",
		"| 64 | stop-and-copy | 200 ms | 250 ms * | 3 | 0 |",
		"| 64 | ctr plain path | failed | – | 0 | 1 |",
		"check bad page 3",
		"post-copy downtime at 1 GiB: not measured",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("no %q in\n%s", want, md)
		}
	}
}

func TestPostCopyTargets(t *testing.T) {
	ms := time.Millisecond
	cells, _ := migCells([]migSample{
		{Mode: modePostCopy, MemMiB: 64, Downtime: 100 * ms, TotalFromRun: true},
		{Mode: modePostCopy, MemMiB: 1024, Downtime: 250 * ms, TotalFromRun: true},
		{Mode: modePostCopy, MemMiB: 2048, Downtime: 130 * ms, TotalFromRun: true},
	})
	got := postCopyTargets(cells)
	for _, want := range []string{"1 GiB 250 ms (target <= 300 ms: reached)", "2 GiB / 64 MiB downtime 1.30 (target <= 1.25: not reached)"} {
		if !strings.Contains(got, want) {
			t.Errorf("no %q in %q", want, got)
		}
	}
}

// The chart is drawn: a PNG with both panels.
func TestMigrationChart(t *testing.T) {
	ms := time.Millisecond
	samples := []migSample{
		{Mode: modePostCopy, MemMiB: 64, Downtime: 170 * ms, Total: 800 * ms, Check: "check ok 1"},
		{Mode: modePostCopy, MemMiB: 1024, Downtime: 270 * ms, Total: 4500 * ms, Check: "check ok 1"},
		{Mode: modeStopCopy, MemMiB: 64, Downtime: 900 * ms, Total: 950 * ms, Check: "check ok 1"},
		{Mode: modeStopCopy, MemMiB: 1024, Downtime: 12 * time.Second, Total: 12500 * ms, Check: "check ok 1"},
	}
	path := filepath.Join(t.TempDir(), "migration.png")
	if err := migrationChart(path, samples); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil || len(b) < 1000 || string(b[1:4]) != "PNG" {
		t.Fatalf("chart: %d bytes, %v", len(b), err)
	}
}
