package containerd_test

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/ckpt-dev/ckpt/integration/soak"
)

// TestSoakShort is `make soak` in small: 50 checkpoint/restore cycles of
// one container through the shim, each restored counter going on from
// where it was, and after a warm-up of 10 cycles no growth of mounts,
// cgroups, shims, open files of containerd and the shims, ckpt's and
// runc's state files, or containerd's checkpoint temp dirs.
func TestSoakShort(t *testing.T) {
	d := daemon(t)
	ctx := testContext(t, d)
	var log strings.Builder
	res, err := soak.Containerd(ctx, d, soak.Config{Cycles: 50, Warmup: 10, Every: 10, Out: &log, ID: fmt.Sprintf("soak-short-%d", os.Getpid())})
	t.Logf("soak:\n%sstart: %s\nbase:  %s\nend:   %s\nelapsed %s", log.String(), res.Start, res.Base, res.End, res.Elapsed)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range res.Failures {
		t.Error(f)
	}
	if g := res.Growth(); len(g) > 0 {
		t.Errorf("grew over %d cycles after the warm-up: %s", res.Cycles-10, strings.Join(g, ", "))
	}
}
