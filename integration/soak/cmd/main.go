// Command soak runs `make soak`: checkpoint/restore cycles of one
// container through ckpt's shim under a private containerd, printing
// failures and the growth of what the host holds (package soak). It exits
// 1 on any failure or growth. Needs root, containerd, runc, criu and Go
// (the harness builds the shim from this tree).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/ckpt-dev/ckpt/integration/containerd/harness"
	"github.com/ckpt-dev/ckpt/integration/internal/testutil"
	"github.com/ckpt-dev/ckpt/integration/soak"
)

func main() {
	cycles := flag.Int("cycles", 1000, "checkpoint/restore cycles through the shim")
	warmup := flag.Int("warmup", 10, "cycles before the baseline sample")
	every := flag.Int("every", 100, "print a sample every this many cycles")
	flag.Parse()
	if err := run(*cycles, *warmup, *every); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

func run(cycles, warmup, every int) (retErr error) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	rootfs, err := os.MkdirTemp("", "ckpt-soak-rootfs")
	if err != nil {
		return err
	}
	defer os.RemoveAll(rootfs)
	if err := testutil.BuildRootfs(rootfs); err != nil {
		return fmt.Errorf("busybox rootfs: %w", err)
	}
	sctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	d, err := harness.Start(sctx, rootfs)
	cancel()
	if err != nil {
		return fmt.Errorf("private containerd: %w", err)
	}
	defer func() {
		if err := d.Stop(); err != nil && retErr == nil {
			retErr = fmt.Errorf("stop containerd: %w", err)
		}
	}()
	fmt.Printf("soak: %d cycles through the shim (containerd %s), warm-up %d\n", cycles, d.Address, warmup)
	res, err := soak.Containerd(ctx, d, soak.Config{Cycles: cycles, Warmup: warmup, Every: every, Out: os.Stdout, ID: fmt.Sprintf("soak-%d", os.Getpid())})
	fmt.Printf("start: %s\nbase:  %s (after %d warm-up cycles)\nend:   %s\n", res.Start, res.Base, warmup, res.End)
	fmt.Printf("cycles=%d failures=%d elapsed=%s (%.2f cycles/s)\n", res.Cycles, len(res.Failures), res.Elapsed.Round(time.Second), float64(res.Cycles)/res.Elapsed.Seconds())
	if err != nil {
		return err
	}
	growth := res.Growth()
	fmt.Printf("growth after warm-up: %s\n", orNone(growth))
	if len(res.Failures) > 0 || len(growth) > 0 {
		return fmt.Errorf("%d failures, growth: %s", len(res.Failures), orNone(growth))
	}
	return nil
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}
