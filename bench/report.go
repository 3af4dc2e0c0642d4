package main

import (
	"encoding/json"
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

type figure struct {
	name string
	get  func(Sample) (float64, bool)
}

func ms(f func(Sample) float64) func(Sample) (float64, bool) {
	return func(s Sample) (float64, bool) { return f(s), true }
}

var figures = []figure{
	{"checkpoint ms", ms(func(s Sample) float64 { return float64(s.Checkpoint.Microseconds()) / 1000 })},
	{"restore ms", ms(func(s Sample) float64 { return float64(s.Restore.Microseconds()) / 1000 })},
	{"criu frozen ms", func(s Sample) (float64, bool) {
		if s.Dump == nil {
			return 0, false
		}
		return float64(s.Dump.Frozen) / 1000, true
	}},
	{"criu memdump ms", func(s Sample) (float64, bool) {
		if s.Dump == nil {
			return 0, false
		}
		return float64(s.Dump.Memdump) / 1000, true
	}},
	{"criu memwrite ms", func(s Sample) (float64, bool) {
		if s.Dump == nil {
			return 0, false
		}
		return float64(s.Dump.Memwrite) / 1000, true
	}},
	{"pages written", func(s Sample) (float64, bool) {
		if s.Dump == nil {
			return 0, false
		}
		return float64(s.Dump.PagesWritten), true
	}},
	{"criu restore ms", func(s Sample) (float64, bool) {
		if s.Restored == nil {
			return 0, false
		}
		return float64(s.Restored.Restore) / 1000, true
	}},
	{"image MiB", ms(func(s Sample) float64 { return float64(s.ImageBytes) / (1 << 20) })},
	{"shim RSS MiB", func(s Sample) (float64, bool) {
		if s.ShimRSS == 0 {
			return 0, false
		}
		return float64(s.ShimRSS) / (1 << 20), true
	}},
}

type key struct{ workload, target string }

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

// markdown renders one table per workload: figures as rows, targets as
// columns (min / median / max), then the ratios of medians to the peers.
func markdown(samples []Sample, env string) string {
	g, wls, tgs := group(samples)
	var b strings.Builder
	fmt.Fprintf(&b, "# ckpt benchmark\n\n%s\n\nEach cell: min / median / max over repetitions.\n", env)
	for _, w := range wls {
		fmt.Fprintf(&b, "\n## %s\n\n| figure |", w)
		for _, t := range tgs {
			fmt.Fprintf(&b, " %s |", t)
		}
		b.WriteString("\n|---|")
		for range tgs {
			b.WriteString("---|")
		}
		b.WriteString("\n")
		for _, f := range figures {
			row := fmt.Sprintf("| %s |", f.name)
			any := false
			for _, t := range tgs {
				if sp, ok := spreadOf(g[key{w, t}], f); ok {
					row += fmt.Sprintf(" %.1f / %.1f / %.1f |", sp.Min, sp.Median, sp.Max)
					any = true
				} else {
					row += " – |"
				}
			}
			if any {
				b.WriteString(row + "\n")
			}
		}
		ratios := ratioLines(g, w)
		if len(ratios) > 0 {
			b.WriteString("\n" + strings.Join(ratios, "\n") + "\n")
		}
	}
	var failed []string
	for _, s := range samples {
		if s.Err != "" {
			failed = append(failed, fmt.Sprintf("- %s / %s rep %d: %s", s.Workload, s.Target, s.Rep, s.Err))
		}
	}
	if len(failed) > 0 {
		b.WriteString("\n## Failed runs\n\n" + strings.Join(failed, "\n") + "\n")
	}
	return b.String()
}

func ratioLines(g map[key][]Sample, w string) []string {
	var out []string
	for _, pair := range [][2]string{{targetCkptShim, targetRuncShim}, {targetCkptShim, targetRawCRIU}, {targetCkptRunc, targetRawCRIU}} {
		a, b := g[key{w, pair[0]}], g[key{w, pair[1]}]
		if len(a) == 0 || len(b) == 0 {
			continue
		}
		for _, f := range figures[:2] {
			sa, _ := spreadOf(a, f)
			sb, _ := spreadOf(b, f)
			if sb.Median > 0 {
				out = append(out, fmt.Sprintf("- %s: %s / %s = %.2f", f.name, pair[0], pair[1], sa.Median/sb.Median))
			}
		}
	}
	return out
}

func writeResults(dir string, samples []Sample, env string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	j, err := json.MarshalIndent(struct {
		Environment string   `json:"environment"`
		Samples     []Sample `json:"samples"`
	}{env, samples}, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), j, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.md"), []byte(markdown(samples, env)), 0o644); err != nil {
		return err
	}
	return chart(filepath.Join(dir, "memory.png"), samples)
}

// chart plots median checkpoint and restore time against memory size, one
// line per target and operation.
func chart(path string, samples []Sample) error {
	g, _, tgs := group(samples)
	p := plot.New()
	p.Title.Text = "checkpoint and restore time vs. memory"
	p.X.Label.Text = "touched memory (MiB)"
	p.Y.Label.Text = "median time (ms)"
	palette := []color.Color{
		color.RGBA{0x1f, 0x77, 0xb4, 0xff}, color.RGBA{0xd6, 0x27, 0x28, 0xff},
		color.RGBA{0x2c, 0xa0, 0x2c, 0xff}, color.RGBA{0x94, 0x67, 0xbd, 0xff},
	}
	for i, t := range tgs {
		for j, f := range figures[:2] {
			var pts plotter.XYs
			for k, ss := range g {
				if k.target != t || len(ss) == 0 || ss[0].MemMiB == 0 {
					continue
				}
				if sp, ok := spreadOf(ss, f); ok {
					pts = append(pts, plotter.XY{X: float64(ss[0].MemMiB), Y: sp.Median})
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
			l.Color = palette[i%len(palette)]
			sc.Color = l.Color
			if j == 1 {
				l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
			}
			p.Add(l, sc)
			p.Legend.Add(fmt.Sprintf("%s %s", t, strings.TrimSuffix(f.name, " ms")), l, sc)
		}
	}
	p.Legend.Top, p.Legend.Left = true, true
	return p.Save(8*vg.Inch, 5*vg.Inch, path)
}
