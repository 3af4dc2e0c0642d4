package main

import (
	"fmt"
	"time"

	"github.com/ckpt-dev/ckpt/runtime/container"
	"github.com/ckpt-dev/ckpt/runtime/image"
	"github.com/ckpt-dev/ckpt/runtime/policy"
	"github.com/ckpt-dev/ckpt/runtime/runcstate"
	"github.com/opencontainers/runc/libcontainer/utils"
	"github.com/urfave/cli/v2"
)

// defaultRuncRoot is runc's own default --root when run as root.
const defaultRuncRoot = "/run/runc"

func init() {
	commands = append(commands, &cli.Command{
		Name:  "checkpoint",
		Usage: "checkpoint a container runc runs",
		Description: `The options the flags do not give are the container's checkpoint
defaults, as the shim applies them: what it saved in the bundle at create
(its runtime config and io.ckpt.checkpoint.* annotations), or, for a
container the shim did not create, its annotations (or --config's file).
The network namespace is dumped with its contents unless --empty-ns says
otherwise.`,
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
			&cli.StringFlag{Name: "config", Usage: "absolute path of a checkpoint defaults file, as the shim's runtime option ConfigPath (default: what the shim saved in the bundle)"},
			&cli.BoolFlag{Name: "lazy-pages", Usage: "leave the memory out of the images and serve it from --page-server until a lazy restore has it all"},
			&cli.StringFlag{Name: "page-server", Usage: "ADDR:PORT for the lazy dump's page server"},
			&cli.IntFlag{Name: "status-fd", Value: -1, Usage: "write a NUL byte to this fd when the images are written and the page server serves (as runc does)"},
			&cli.DurationFlag{Name: "transfer-timeout", Usage: "longest the container stays frozen serving its memory (default 10m)"},
		}, tlsFlags()...),
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return cli.Exit("ckpt checkpoint: want exactly one container id", 2)
			}
			opts, err := checkpointOptions(c)
			if err != nil {
				return err
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

// checkpointOptions are the container's checkpoint defaults, as the shim
// would apply them (runtime/policy: the defaults the shim saved in the
// bundle, else the container's io.ckpt.checkpoint.* annotations, or
// --config's file), with the flags given overriding them.
func checkpointOptions(c *cli.Context) (container.CheckpointOptions, error) {
	root, id := c.String("root"), c.Args().First()
	st, _, err := runcstate.Load(root, id)
	if err != nil {
		return container.CheckpointOptions{}, err
	}
	// The annotations runc recorded at create: config.json may have
	// changed since.
	bundle, annotations := utils.Annotations(st.Config.Labels)
	var d policy.Defaults
	if cfg := c.String("config"); cfg != "" {
		d, err = policy.Resolve(policy.Config{Path: cfg}, annotations)
	} else {
		d, err = policy.LoadDefaults(bundle, annotations)
	}
	if err != nil {
		return container.CheckpointOptions{}, fmt.Errorf("checkpoint defaults of %s: %w", id, err)
	}
	var o policy.Overrides
	for name, dst := range map[string]**bool{
		"leave-running": &o.LeaveRunning, "tcp-established": &o.TCPEstablished, "ext-unix-sk": &o.ExtUnixSK,
		"shell-job": &o.ShellJob, "file-locks": &o.FileLocks,
	} {
		if c.IsSet(name) {
			v := c.Bool(name)
			*dst = &v
		}
	}
	if c.IsSet("manage-cgroups-mode") {
		v := c.String("manage-cgroups-mode")
		o.CgroupsMode = &v
	}
	if c.IsSet("empty-ns") {
		emptyNet, err := emptyNS(c.StringSlice("empty-ns"))
		if err != nil {
			return container.CheckpointOptions{}, err
		}
		o.EmptyNetNS = &emptyNet
	}
	opts := d.With(o)
	opts.Root, opts.ID, opts.Runc = root, id, c.String("runc")
	opts.ImagePath, opts.WorkPath, opts.ParentPath = c.String("image-path"), c.String("work-path"), c.String("parent-path")
	opts.PreDump, opts.CriuPath = c.Bool("pre-dump"), criuPath(c)
	opts.LazyPages, opts.PageServer = c.Bool("lazy-pages"), c.String("page-server")
	opts.TLS, opts.TransferTimeout = tlsOptions(c), c.Duration("transfer-timeout")
	return opts, nil
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
