// Command ckpt is ckpt's CLI: host checks, checkpoint and restore of runc
// containers, checkpoint inspection, and CRIU action-script compatibility.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"

	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"
)

// commands is filled by each command's file, so adding a command touches
// one file only.
var commands []*cli.Command

func main() {
	app := &cli.App{
		Name:  "ckpt",
		Usage: "checkpoint and restore containers with CRIU",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error", EnvVars: []string{"CKPT_LOG_LEVEL"}},
			&cli.StringFlag{Name: "criu", Usage: "path of the criu binary (default: criu in PATH)", EnvVars: []string{"CKPT_CRIU"}},
		},
		Before: func(c *cli.Context) error {
			lvl, err := logrus.ParseLevel(c.String("log-level"))
			if err != nil {
				return err
			}
			logrus.SetLevel(lvl)
			logrus.SetOutput(os.Stderr)
			return nil
		},
		Commands: commands,
	}
	// SIGINT and SIGTERM cancel the command's context: a checkpoint or
	// restore kills criu and its tree and undoes what it made before ckpt
	// exits. They stay caught until then, so a second ^C cannot cut the
	// cleanup short (SIGKILL can; `ckpt delete` and the next restore
	// clean up after that).
	ctx, stop := signal.NotifyContext(context.Background(), unix.SIGINT, unix.SIGTERM)
	defer stop()
	err := app.RunContext(ctx, os.Args)
	if ctx.Err() != nil && err != nil {
		logrus.WithError(err).Warn("interrupted by a signal; cleaned up")
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "ckpt: %v\n", err)
		stop()
		os.Exit(1)
	}
}
