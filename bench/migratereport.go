package main

import (
	"encoding/json"
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
)

// migCell is one mode at one size: the medians of its good samples.
type migCell struct {
	Downtime, Total time.Duration
	OK, Failed      int
	NotAvailable    string
	LastErr         string
}

func migCells(samples []migSample) (map[string]map[int]*migCell, []int) {
	cells := map[string]map[int]*migCell{}
	var sizes []int
	for _, s := range samples {
		if cells[s.Mode] == nil {
			cells[s.Mode] = map[int]*migCell{}
		}
		c := cells[s.Mode][s.MemMiB]
		if c == nil {
			c = &migCell{}
			cells[s.Mode][s.MemMiB] = c
		}
		if !slices.Contains(sizes, s.MemMiB) {
			sizes = append(sizes, s.MemMiB)
		}
		switch {
		case s.NotAvailable != "":
			c.NotAvailable = s.NotAvailable
		case s.Err != "":
			c.Failed++
			c.LastErr = s.Err
		default:
			c.OK++
		}
	}
	for mode, bySize := range cells {
		for mib, c := range bySize {
			var down, total []time.Duration
			for _, s := range samples {
				if s.Mode == mode && s.MemMiB == mib && s.Err == "" && s.NotAvailable == "" {
					down, total = append(down, s.Downtime), append(total, s.Total)
				}
			}
			if len(down) > 0 {
				c.Downtime, c.Total = medianDur(down), medianDur(total)
			}
		}
	}
	slices.Sort(sizes)
	return cells, sizes
}

// migrationMarkdown is the table: downtime and total per size and mode,
// medians of the samples whose moved process checked out.
func migrationMarkdown(samples []migSample, reps int, env string) string {
	cells, sizes := migCells(samples)
	var b strings.Builder
	fmt.Fprintf(&b, "\n### Live migration between two containerds (medians of %d repetitions)\n\n%s\n\n", reps, env)
	b.WriteString("Downtime: checkpoint request to the task started on the target. Total: checkpoint request to every page on the target and the source deleted")
	if hasRunTotal(samples) {
		b.WriteString(" (where marked *, Run's whole call: it returns once the source is deleted; it includes connecting and the preflight)")
	}
	b.WriteString(". Only samples whose moved memhog beat on and found all its pages intact count.\n\n")
	b.WriteString("| MiB | mode | downtime | total | runs ok | failed |\n|---|---|---|---|---|---|\n")
	for _, mib := range sizes {
		for _, mode := range migrateModes {
			c := cells[mode][mib]
			if c == nil {
				continue
			}
			down, total := "–", "–"
			switch {
			case c.OK > 0:
				down, total = fmtMs(c.Downtime), fmtMs(c.Total)
				if runTotal(samples, mode, mib) {
					total += " *"
				}
			case c.NotAvailable != "":
				down = "not available: " + oneLine(lastBytes(c.NotAvailable, 160))
			case c.Failed > 0:
				down = "failed"
			}
			fmt.Fprintf(&b, "| %d | %s | %s | %s | %d | %d |\n", mib, mode, down, total, c.OK, c.Failed)
		}
	}
	b.WriteString(phasesMarkdown(samples, sizes))
	var failed []string
	for _, s := range samples {
		if s.Err != "" {
			failed = append(failed, fmt.Sprintf("- %d MiB / %s rep %d: %s", s.MemMiB, s.Mode, s.Rep, oneLine(s.Err)))
		}
	}
	if len(failed) > 0 {
		b.WriteString("\nFailed samples:\n\n" + strings.Join(failed, "\n") + "\n")
	}
	b.WriteString("\n" + postCopyTargets(cells) + "\n")
	return b.String()
}

// phasesMarkdown is where a move's time goes, medians of the good
// samples that could tell the phases apart.
func phasesMarkdown(samples []migSample, sizes []int) string {
	var b strings.Builder
	for _, mib := range sizes {
		for _, mode := range migrateModes {
			row := fmt.Sprintf("| %d | %s |", mib, mode)
			any := false
			for _, ph := range []string{phaseCheckpoint, phaseCopy, phaseRestore} {
				var d []time.Duration
				for _, s := range samples {
					if v, ok := s.Phases[ph]; ok && s.Mode == mode && s.MemMiB == mib && s.Err == "" {
						d = append(d, v)
					}
				}
				if len(d) == 0 {
					row += " – |"
					continue
				}
				row += " " + fmtMs(medianDur(d)) + " |"
				any = true
			}
			if any {
				b.WriteString(row + "\n")
			}
		}
	}
	if b.Len() == 0 {
		return ""
	}
	return "\nWhere the downtime goes (medians): checkpoint (request to the checkpoint image in the source's content store), copy (the checkpoint's blobs to the target's content store), restore (container and task created and started on the target).\n\n" +
		"| MiB | mode | checkpoint | copy | restore |\n|---|---|---|---|---|\n" + b.String()
}

// postCopyTargets states the post-copy goals against this run: downtime
// at most 300 ms at 1 GiB, and flat in size (2 GiB within 25% of 64 MiB).
func postCopyTargets(cells map[string]map[int]*migCell) string {
	pc := cells[modePostCopy]
	at := func(mib int) (time.Duration, bool) {
		if c := pc[mib]; c != nil && c.OK > 0 {
			return c.Downtime, true
		}
		return 0, false
	}
	var out []string
	if d, ok := at(1024); ok {
		out = append(out, fmt.Sprintf("post-copy downtime at 1 GiB %s (target <= 300 ms: %s)", fmtMs(d), verdict(d <= 300*time.Millisecond)))
	} else {
		out = append(out, "post-copy downtime at 1 GiB: not measured (target <= 300 ms)")
	}
	small, ok1 := at(64)
	large, ok2 := at(2048)
	if ok1 && ok2 && small > 0 {
		r := float64(large) / float64(small)
		out = append(out, fmt.Sprintf("2 GiB / 64 MiB downtime %.2f (target <= 1.25: %s)", r, verdict(r <= 1.25)))
	} else {
		out = append(out, "2 GiB / 64 MiB downtime: not measured (target <= 1.25)")
	}
	return "Targets: " + strings.Join(out, "; ") + "."
}

func verdict(ok bool) string {
	if ok {
		return "reached"
	}
	return "not reached"
}

func hasRunTotal(samples []migSample) bool {
	return slices.ContainsFunc(samples, func(s migSample) bool { return s.Err == "" && s.TotalIsCall })
}

// runTotal says whether mode's total at mib is Run's duration.
func runTotal(samples []migSample, mode string, mib int) bool {
	return slices.ContainsFunc(samples, func(s migSample) bool {
		return s.Mode == mode && s.MemMiB == mib && s.Err == "" && s.TotalIsCall
	})
}

// writeMigration writes migration.md, migration.json (every sample) and
// migration.png (downtime and total against memory, a line per mode).
func writeMigration(dir string, samples []migSample, reps int, env string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	j, err := json.MarshalIndent(struct {
		Environment string      `json:"environment"`
		Samples     []migSample `json:"samples"`
	}{env, samples}, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "migration.json"), j, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "migration.md"), []byte(migrationMarkdown(samples, reps, env)), 0o644); err != nil {
		return err
	}
	return migrationChart(filepath.Join(dir, "migration.png"), samples)
}

// migrationChart plots median downtime and total against memory size, a
// panel each, a line per mode that has measurements; memory on a log
// scale as in memory.png.
func migrationChart(path string, samples []migSample) error {
	cells, sizes := migCells(samples)
	palette := []color.Color{
		color.RGBA{0x2c, 0xa0, 0x2c, 0xff}, color.RGBA{0x1f, 0x77, 0xb4, 0xff}, color.RGBA{0xd6, 0x27, 0x28, 0xff},
	}
	var ticks []plot.Tick
	for _, mib := range sizes {
		ticks = append(ticks, plot.Tick{Value: float64(mib), Label: fmt.Sprint(mib)})
	}
	var panels []*plot.Plot
	for _, fig := range []struct {
		name string
		get  func(*migCell) time.Duration
	}{{"downtime", func(c *migCell) time.Duration { return c.Downtime }}, {"total", func(c *migCell) time.Duration { return c.Total }}} {
		p := plot.New()
		p.Title.Text = "migration " + fig.name + " vs. memory"
		p.X.Label.Text = "touched memory (MiB)"
		p.Y.Label.Text = "median " + fig.name + " (ms)"
		p.X.Scale = plot.LogScale{}
		p.X.Tick.Marker = plot.ConstantTicks(ticks)
		for i, mode := range migrateModes {
			var pts plotter.XYs
			for _, mib := range sizes {
				if c := cells[mode][mib]; c != nil && c.OK > 0 {
					pts = append(pts, plotter.XY{X: float64(mib), Y: msOf(fig.get(c))})
				}
			}
			if len(pts) == 0 {
				continue
			}
			l, sc, err := plotter.NewLinePoints(pts)
			if err != nil {
				return err
			}
			l.Color, sc.Color = palette[i], palette[i]
			p.Add(l, sc)
			p.Legend.Add(mode, l, sc)
		}
		p.Legend.Top, p.Legend.Left = true, true
		panels = append(panels, p)
	}
	return writePanels(path, panels)
}
