// Command ckpt is ckpt's CLI: host checks, checkpoint and restore of runc
// containers, checkpoint inspection, and CRIU action-script compatibility.
package main

import (
	"fmt"
	"os"

	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"
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
	if err := app.Run(os.Args); err != nil {
		fmt.Fprintf(os.Stderr, "ckpt: %v\n", err)
		os.Exit(1)
	}
}
