package main

import (
	"encoding/json"
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

type figure struct {
	name string
	get  func(Sample) (float64, bool)
}

func ms(f func(Sample) float64) func(Sample) (float64, bool) {
	return func(s Sample) (float64, bool) { return f(s), true }
}

// dumpFig and restoreFig read one of CRIU's statistics, where CRIU left them.
func dumpFig(f func(*DumpStats) float64) func(Sample) (float64, bool) {
	return func(s Sample) (float64, bool) {
		if s.Dump == nil {
			return 0, false
		}
		return f(s.Dump), true
	}
}

func restoreFig(f func(*RestoreStats) float64) func(Sample) (float64, bool) {
	return func(s Sample) (float64, bool) {
		if s.Restored == nil {
			return 0, false
		}
		return f(s.Restored), true
	}
}

func rpcFig(f func(*RPCTimes) time.Duration) func(Sample) (float64, bool) {
	return func(s Sample) (float64, bool) {
		if s.RPC == nil {
			return 0, false
		}
		return msOf(f(s.RPC)), true
	}
}

func mib(f func(Sample) int64) func(Sample) (float64, bool) {
	return func(s Sample) (float64, bool) {
		v := f(s)
		return float64(v) / (1 << 20), v > 0
	}
}

func msOf(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// figures: the first two are the headline (and the chart's); CRIU's
// times are microseconds in its stats files.
var figures = []figure{
	{"checkpoint ms", ms(func(s Sample) float64 { return msOf(s.Checkpoint) })},
	{"restore ms", ms(func(s Sample) float64 { return msOf(s.Restore) })},
	{"task service checkpoint ms", rpcFig(func(r *RPCTimes) time.Duration { return r.Checkpoint })},
	{"task service restore ms (create+start)", rpcFig(func(r *RPCTimes) time.Duration { return r.Create + r.Start })},
	{"new task ms (create+start, no checkpoint)", func(s Sample) (float64, bool) { return msOf(s.NewTask), s.NewTask > 0 }},
	{"criu freezing ms", dumpFig(func(d *DumpStats) float64 { return float64(d.Freezing) / 1000 })},
	{"criu frozen ms", dumpFig(func(d *DumpStats) float64 { return float64(d.Frozen) / 1000 })},
	{"criu memdump ms", dumpFig(func(d *DumpStats) float64 { return float64(d.Memdump) / 1000 })},
	{"criu memwrite ms", dumpFig(func(d *DumpStats) float64 { return float64(d.Memwrite) / 1000 })},
	{"pages written", dumpFig(func(d *DumpStats) float64 { return float64(d.PagesWritten) })},
	{"criu forking ms", restoreFig(func(r *RestoreStats) float64 { return float64(r.Forking) / 1000 })},
	{"criu restore ms", restoreFig(func(r *RestoreStats) float64 { return float64(r.Restore) / 1000 })},
	{"pages restored", restoreFig(func(r *RestoreStats) float64 { return float64(r.PagesRestored) })},
	{"image MiB", mib(func(s Sample) int64 { return s.ImageBytes })},
	{"shim RSS MiB", mib(func(s Sample) int64 { return s.ShimRSS })},
	{"shim peak RSS MiB", mib(func(s Sample) int64 { return s.ShimPeakRSS })},
	{"shim anon RSS MiB", mib(func(s Sample) int64 { return s.ShimAnonRSS })},
	{"shim RSS MiB, new task (no checkpoint yet)", mib(func(s Sample) int64 { return s.NewShimRSS })},
	{"shim anon RSS MiB, new task", mib(func(s Sample) int64 { return s.NewShimAnonRSS })},
}

// ratios are the comparisons reported, numerator first: ckpt against the
// runc shim (its peer) and against raw CRIU (the floor).
var ratios = [][2]string{{targetCkptShim, targetRuncShim}, {targetCkptShim, targetRawCRIU}, {targetCkptRunc, targetRawCRIU}}

type key struct{ workload, target string }

// targetOrder is the column order: floor, engine, peer, ckpt's shim.
var targetOrder = []string{targetRawCRIU, targetCkptRunc, targetRuncShim, targetCkptShim}

// group sorts the successful samples by workload and target, and lists
// the workloads in run order and the targets in targetOrder.
func group(samples []Sample) (map[key][]Sample, []string, []string) {
	g := map[key][]Sample{}
	var wl, tg []string
	seen := map[string]bool{}
	for _, s := range samples {
		if s.Err != "" {
			continue
		}
		k := key{s.Workload, s.Target}
		g[k] = append(g[k], s)
		if !seen["w"+s.Workload] {
			seen["w"+s.Workload] = true
			wl = append(wl, s.Workload)
		}
		if !seen["t"+s.Target] {
			seen["t"+s.Target] = true
			tg = append(tg, s.Target)
		}
	}
	rank := func(t string) int {
		if i := slices.Index(targetOrder, t); i >= 0 {
			return i
		}
		return len(targetOrder)
	}
	sort.SliceStable(tg, func(i, j int) bool { return rank(tg[i]) < rank(tg[j]) })
	return g, wl, tg
}

func spreadOf(ss []Sample, f figure) (Spread, bool) {
	var v []float64
	for _, s := range ss {
		if x, ok := f.get(s); ok {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return Spread{}, false
	}
	return spread(v), true
}

// markdown renders two summaries (median and minimum checkpoint and
// restore times and their ratios), then one table per workload: figures as rows, targets as
// columns (min / median / max), and the ratios of medians.
func markdown(samples []Sample, env string) string {
	g, wls, tgs := group(samples)
	pairs := presentRatios(g, tgs)
	var b strings.Builder
	fmt.Fprintf(&b, "# ckpt benchmark\n\n%s\n", env)
	summary(&b, g, wls, tgs, pairs, "medians", median)
	// A VM's slow outliers (a host page fault, a grace period) are one-sided:
	// where medians scatter (large tmpfs writes), the fastest runs of each
	// target compare what the targets themselves cost.
	summary(&b, g, wls, tgs, pairs, "minima", minimum)

	b.WriteString("\n## Figures per workload\n\nEach cell: min / median / max over repetitions; ratios are of medians.\n")
	for _, w := range wls {
		fmt.Fprintf(&b, "\n### %s\n\n| figure |", w)
		for _, t := range tgs {
			fmt.Fprintf(&b, " %s |", t)
		}
		for _, p := range pairs {
			fmt.Fprintf(&b, " %s / %s |", p[0], p[1])
		}
		b.WriteString("\n|---|" + strings.Repeat("---|", len(tgs)+len(pairs)) + "\n")
		for _, f := range figures {
			row := fmt.Sprintf("| %s |", f.name)
			any := false
			for _, t := range tgs {
				if sp, ok := spreadOf(g[key{w, t}], f); ok {
					row += fmt.Sprintf(" %s / %s / %s |", num(sp.Min), num(sp.Median), num(sp.Max))
					any = true
				} else {
					row += " – |"
				}
			}
			for _, p := range pairs {
				row += " " + ratioCell(g, w, p, f) + " |"
			}
			if any {
				b.WriteString(row + "\n")
			}
		}
	}
	var failed []string
	for _, s := range samples {
		if s.Err != "" {
			failed = append(failed, fmt.Sprintf("- %s / %s rep %d: %s", s.Workload, s.Target, s.Rep, oneLine(s.Err)))
		}
	}
	if len(failed) > 0 {
		b.WriteString("\n## Failed runs\n\n" + strings.Join(failed, "\n") + "\n")
	}
	return b.String()
}

func median(sp Spread) float64  { return sp.Median }
func minimum(sp Spread) float64 { return sp.Min }

// summary renders checkpoint and restore times, as stat picks them from
// each target's spread, and their ratios.
func summary(b *strings.Builder, g map[key][]Sample, wls, tgs []string, pairs [][2]string, name string, stat func(Spread) float64) {
	fmt.Fprintf(b, "\n## Summary (%s, ms)\n\n| workload | op |", name)
	for _, t := range tgs {
		fmt.Fprintf(b, " %s |", t)
	}
	for _, p := range pairs {
		fmt.Fprintf(b, " %s / %s |", p[0], p[1])
	}
	b.WriteString("\n|---|---|" + strings.Repeat("---|", len(tgs)+len(pairs)) + "\n")
	for _, w := range wls {
		for _, f := range figures[:2] {
			fmt.Fprintf(b, "| %s | %s |", w, strings.TrimSuffix(f.name, " ms"))
			for _, t := range tgs {
				if sp, ok := spreadOf(g[key{w, t}], f); ok {
					fmt.Fprintf(b, " %.0f |", stat(sp))
				} else {
					b.WriteString(" – |")
				}
			}
			for _, p := range pairs {
				b.WriteString(" " + ratioOf(g, w, p, f, stat) + " |")
			}
			b.WriteString("\n")
		}
	}
}

// presentRatios are the ratios whose two targets both have samples.
func presentRatios(g map[key][]Sample, tgs []string) [][2]string {
	has := map[string]bool{}
	for _, t := range tgs {
		has[t] = true
	}
	var out [][2]string
	for _, p := range ratios {
		if has[p[0]] && has[p[1]] {
			out = append(out, p)
		}
	}
	return out
}

// ratioCell is the ratio of the pair's medians of f on workload w.
func ratioCell(g map[key][]Sample, w string, p [2]string, f figure) string {
	return ratioOf(g, w, p, f, median)
}

// ratioOf is the ratio of stat of the pair's spreads of f on workload w.
func ratioOf(g map[key][]Sample, w string, p [2]string, f figure, stat func(Spread) float64) string {
	a, aok := spreadOf(g[key{w, p[0]}], f)
	b, bok := spreadOf(g[key{w, p[1]}], f)
	if !aok || !bok || stat(b) == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", stat(a)/stat(b))
}

// num prints a figure with the precision its size deserves.
func num(v float64) string {
	if v >= 100 || v == float64(int64(v)) {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.1f", v)
}

// oneLine keeps an error readable in a Markdown list.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 400 {
		s = s[:400] + "..."
	}
	return s
}

// results is results.json.
type results struct {
	Environment string   `json:"environment"`
	Samples     []Sample `json:"samples"`
}

// rerender writes the tables and the chart of an earlier run's results.json.
func rerender(from, dir string) error {
	data, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	var r results
	if err := json.Unmarshal(data, &r); err != nil {
		return fmt.Errorf("%s: %w", from, err)
	}
	return writeResults(dir, r.Samples, r.Environment)
}

func writeResults(dir string, samples []Sample, env string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	j, err := json.MarshalIndent(results{env, samples}, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), j, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.md"), []byte(markdown(samples, env)), 0o644); err != nil {
		return err
	}
	chartPath := filepath.Join(dir, "memory.png")
	if !hasMemoryWorkload(samples) {
		// A run with -sizes "" has no size axis to plot; a stale chart
		// from an earlier run would mislead, so it goes too.
		if err := os.Remove(chartPath); err != nil && !os.IsNotExist(err) {
			return err
		}
		return nil
	}
	return chart(chartPath, samples)
}

func hasMemoryWorkload(samples []Sample) bool {
	for _, s := range samples {
		if s.MemMiB > 0 {
			return true
		}
	}
	return false
}

// chart plots median checkpoint and restore time against memory size, a
// panel per operation, a line per target; memory on a log scale so that
// 64 MiB and 2 GiB are both readable.
func chart(path string, samples []Sample) error {
	g, _, tgs := group(samples)
	palette := []color.Color{
		color.RGBA{0x1f, 0x77, 0xb4, 0xff}, color.RGBA{0xd6, 0x27, 0x28, 0xff},
		color.RGBA{0x2c, 0xa0, 0x2c, 0xff}, color.RGBA{0x94, 0x67, 0xbd, 0xff},
	}
	var panels []*plot.Plot
	for _, f := range figures[:2] {
		p := plot.New()
		p.Title.Text = strings.TrimSuffix(f.name, " ms") + " time vs. memory"
		p.X.Label.Text = "touched memory (MiB)"
		p.Y.Label.Text = "median " + strings.TrimSuffix(f.name, " ms") + " (ms)"
		p.X.Scale = plot.LogScale{}
		var ticks []plot.Tick
		seen := map[int]bool{}
		for i, t := range tgs {
			var pts plotter.XYs
			for k, ss := range g {
				if k.target != t || len(ss) == 0 || ss[0].MemMiB == 0 {
					continue
				}
				if sp, ok := spreadOf(ss, f); ok {
					pts = append(pts, plotter.XY{X: float64(ss[0].MemMiB), Y: sp.Median})
					if !seen[ss[0].MemMiB] {
						seen[ss[0].MemMiB] = true
						ticks = append(ticks, plot.Tick{Value: float64(ss[0].MemMiB), Label: fmt.Sprint(ss[0].MemMiB)})
					}
				}
			}
			if len(pts) == 0 {
				continue
			}
			sort.Slice(pts, func(a, b int) bool { return pts[a].X < pts[b].X })
			l, sc, err := plotter.NewLinePoints(pts)
			if err != nil {
				return err
			}
			l.Color, sc.Color = palette[i%len(palette)], palette[i%len(palette)]
			p.Add(l, sc)
			p.Legend.Add(t, l, sc)
		}
		p.X.Tick.Marker = plot.ConstantTicks(ticks)
		p.Legend.Top, p.Legend.Left = true, true
		panels = append(panels, p)
	}
	return writePanels(path, panels)
}

// writePanels draws panels side by side into a PNG at path: the layout
// both charts (memory.png, migration.png) use.
func writePanels(path string, panels []*plot.Plot) error {
	img := vgimg.New(12*vg.Inch, 5*vg.Inch)
	tiles := draw.Tiles{Rows: 1, Cols: len(panels), PadX: vg.Inch / 4, PadTop: vg.Inch / 8, PadBottom: vg.Inch / 8, PadLeft: vg.Inch / 8, PadRight: vg.Inch / 8}
	canvases := plot.Align([][]*plot.Plot{panels}, tiles, draw.New(img))
	for i, p := range panels {
		p.Draw(canvases[0][i])
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
