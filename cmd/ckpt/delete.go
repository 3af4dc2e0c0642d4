package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"

	"github.com/ckpt-dev/ckpt/runtime/container"
	"github.com/ckpt-dev/ckpt/runtime/runcstate"
	"github.com/urfave/cli/v2"
)

func init() {
	commands = append(commands, &cli.Command{
		Name:      "delete",
		Usage:     "delete a container, also one a killed ckpt left half-restored",
		ArgsUsage: "ID",
		Description: `Deletes container ID under runc's --root. An id that a restore left when its
ckpt process was killed (SIGKILL) is removed by ckpt: criu's tasks, the
criu-root and tmpfs mounts, the cgroups and the state dir. Any other
container is runc's: ckpt runs "runc delete --force" for it.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "root", Value: defaultRuncRoot, Usage: "runc's root dir"},
			&cli.StringFlag{Name: "runc", Value: "runc", Usage: "runc binary for containers runc made"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return cli.Exit("ckpt delete: want exactly one container id", 2)
			}
			root, id := c.String("root"), c.Args().First()
			if err := container.RemoveLeftover(c.Context, root, id); err != nil {
				return err
			}
			dir, err := runcstate.Dir(root, id)
			if err != nil {
				return err
			}
			if _, err := os.Stat(dir); err != nil {
				if errors.Is(err, os.ErrNotExist) {
					return nil // nothing (more) under the id
				}
				return err
			}
			cmd := exec.CommandContext(c.Context, c.String("runc"), "--root", root, "delete", "--force", id)
			cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
			if err := cmd.Run(); err != nil {
				return fmt.Errorf("runc delete --force %s: %w", id, err)
			}
			return nil
		},
	})
}
