package main

import (
	"fmt"
	"time"

	"github.com/ckpt-dev/ckpt/runtime/container"
	"github.com/ckpt-dev/ckpt/runtime/image"
	"github.com/urfave/cli/v2"
)

// defaultRuncRoot is runc's own default --root when run as root.
const defaultRuncRoot = "/run/runc"

func init() {
	commands = append(commands, &cli.Command{
		Name:      "checkpoint",
		Usage:     "checkpoint a container runc runs",
		ArgsUsage: "ID",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "root", Value: defaultRuncRoot, Usage: "runc's root dir"},
			&cli.StringFlag{Name: "runc", Value: "runc", Usage: "runc binary (to delete the container afterwards)"},
			&cli.StringFlag{Name: "image-path", Required: true, Usage: "dir for the checkpoint images"},
			&cli.StringFlag{Name: "work-path", Usage: "dir for CRIU's log (default: the image dir)"},
			&cli.StringFlag{Name: "parent-path", Usage: "previous pre-dump, relative to the image dir"},
			&cli.BoolFlag{Name: "leave-running", Usage: "leave the container running after the checkpoint"},
			&cli.BoolFlag{Name: "tcp-established", Usage: "checkpoint established TCP connections"},
			&cli.BoolFlag{Name: "ext-unix-sk", Usage: "allow external unix sockets"},
			&cli.BoolFlag{Name: "shell-job", Usage: "allow a shell job (a terminal from outside the container)"},
			&cli.BoolFlag{Name: "file-locks", Usage: "checkpoint file locks"},
			&cli.StringFlag{Name: "manage-cgroups-mode", Usage: "CRIU cgroups mode: soft, full, strict or ignore"},
			&cli.StringSliceFlag{Name: "empty-ns", Usage: "namespaces to dump empty (only \"network\")"},
			&cli.BoolFlag{Name: "pre-dump", Usage: "copy memory only, for a later --parent-path"},
			&cli.BoolFlag{Name: "lazy-pages", Usage: "leave the memory out of the images and serve it from --page-server until a lazy restore has it all"},
			&cli.StringFlag{Name: "page-server", Usage: "ADDR:PORT for the lazy dump's page server"},
			&cli.IntFlag{Name: "status-fd", Value: -1, Usage: "write a NUL byte to this fd when the images are written and the page server serves (as runc does)"},
			&cli.DurationFlag{Name: "transfer-timeout", Usage: "longest the container stays frozen serving its memory (default 10m)"},
		}, tlsFlags()...),
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return cli.Exit("ckpt checkpoint: want exactly one container id", 2)
			}
			emptyNet, err := emptyNS(c.StringSlice("empty-ns"))
			if err != nil {
				return err
			}
			opts := container.CheckpointOptions{
				Root: c.String("root"), ID: c.Args().First(), Runc: c.String("runc"),
				ImagePath: c.String("image-path"), WorkPath: c.String("work-path"), ParentPath: c.String("parent-path"),
				LeaveRunning: c.Bool("leave-running"), TCPEstablished: c.Bool("tcp-established"),
				ExtUnixSK: c.Bool("ext-unix-sk"), ShellJob: c.Bool("shell-job"), FileLocks: c.Bool("file-locks"),
				CgroupsMode: c.String("manage-cgroups-mode"), EmptyNetNS: emptyNet, PreDump: c.Bool("pre-dump"),
				CriuPath: criuPath(c), LazyPages: c.Bool("lazy-pages"), PageServer: c.String("page-server"),
				TLS: tlsOptions(c), TransferTimeout: c.Duration("transfer-timeout"),
			}
			var md *image.Metadata
			if opts.LazyPages {
				md, err = lazyCheckpoint(c, opts)
			} else {
				md, err = container.Checkpoint(c.Context, opts)
			}
			if err != nil {
				return err
			}
			what := "checkpoint"
			if md.Options.PreDump {
				what = "pre-dump"
			}
			fmt.Printf("%s of %s written to %s (CRIU %s, %s", what, md.ContainerID, c.String("image-path"), md.CRIUVersion,
				(time.Duration(md.Timings.TotalMs) * time.Millisecond).String())
			switch {
			case md.Stats != nil && md.Options.LazyPages:
				// CRIU's frozen time is not meaningful for a lazy dump.
				fmt.Printf(", %d pages served lazily", md.Stats.PagesLazy)
			case md.Stats != nil:
				fmt.Printf(", frozen %s, %d pages", (time.Duration(md.Stats.FrozenTimeUs) * time.Microsecond).Round(time.Millisecond), md.Stats.PagesWritten)
			}
			fmt.Println(")")
			return nil
		},
	})
}

// criuPath is the global --criu flag.
func criuPath(c *cli.Context) string {
	for _, ctx := range c.Lineage() {
		if ctx.IsSet("criu") {
			return ctx.String("criu")
		}
	}
	return c.String("criu")
}

func emptyNS(ns []string) (bool, error) {
	net := false
	for _, n := range ns {
		if n != "network" {
			return false, fmt.Errorf("--empty-ns %q: only \"network\" is supported", n)
		}
		net = true
	}
	return net, nil
}
