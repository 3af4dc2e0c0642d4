package docker_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ckpt-dev/ckpt/integration/soak"
	ckptshim "github.com/ckpt-dev/ckpt/runtime/shim"
)

// TestDockerSoak is the Docker half of `make soak`: checkpoint/restore
// cycles of one counter container on Docker 28 with ckpt's shim through
// the CLI (`docker checkpoint create`, `docker start --checkpoint`,
// `docker checkpoint rm`). Every restored counter goes on without a gap,
// and after the warm-up nothing grows (integration/soak's counts, for
// the engine's containerd, dockerd and shims). CKPT_SOAK_DOCKER_CYCLES
// sets the number of cycles: 10 by default (CI), 100 in `make soak`.
func TestDockerSoak(t *testing.T) {
	cycles := 10
	if v := os.Getenv("CKPT_SOAK_DOCKER_CYCLES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 2 {
			t.Fatalf("CKPT_SOAK_DOCKER_CYCLES=%q: want a number >= 2", v)
		}
		cycles = n
	}
	warmup := min(10, cycles/2)
	bin := requireDocker(t, "28")
	e := startEngine(t, "28", bin, shimDir(t))
	defer e.dumpOnFailure(t)
	tg := soak.Target{
		Dir: e.dir, Address: e.containerdSock(), RuncRoot: filepath.Join(ckptshim.RuncRoot, e.ns),
		CgroupParent: strings.TrimPrefix(e.cgroupParent, "/"), TempDir: filepath.Join(e.dir, "xdg"),
		Daemons: []int{e.containerd.cmd.Process.Pid, e.dockerd.cmd.Process.Pid},
	}
	name := "soak"
	e.runCounter(t, name, "--runtime", ckptRuntime().name)
	start := soak.MeasureTarget(tg)
	rss0 := []int{soak.RSSKiB(tg.Daemons[0]), soak.RSSKiB(tg.Daemons[1])}
	base := start
	for i := 1; i <= cycles; i++ {
		cp := fmt.Sprintf("soak%d", i)
		before := e.checkpointExit(t, name, cp)
		e.must(t, "start", "--checkpoint", cp, name)
		assertContinuous(t, name, e.waitCounter(t, name, before+1))
		e.must(t, "checkpoint", "rm", name, cp)
		if i == warmup {
			base = soak.MeasureTarget(tg)
		}
		if i%10 == 0 {
			t.Logf("cycle %d: %s", i, soak.MeasureTarget(tg))
		}
	}
	end := soak.Settled(func() soak.Sample { return soak.MeasureTarget(tg) }, base)
	t.Logf("%d cycles\nstart: %s\nbase:  %s (after %d cycles)\nend:   %s", cycles, start, base, warmup, end)
	t.Logf("rss at the end: containerd %d KiB, dockerd %d KiB (start: %d, %d)", soak.RSSKiB(tg.Daemons[0]), soak.RSSKiB(tg.Daemons[1]), rss0[0], rss0[1])
	if g := end.Growth(base); len(g) > 0 {
		t.Errorf("grew after the warm-up: %s", strings.Join(g, ", "))
	}
}
