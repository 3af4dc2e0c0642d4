package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/ckpt-dev/ckpt/runtime/migrate"
	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"
)

func init() {
	commands = append(commands, &cli.Command{
		Name:      "migrate",
		Usage:     "move a running container to another host's containerd",
		ArgsUsage: "CONTAINER",
		Description: `Moves CONTAINER (a task of io.containerd.ckpt.v2) from the containerd at
--address to the one at --to, keeping its id and namespace. --to is
tcp://HOST:PORT (containerd's [grpc] tcp_address; mutual TLS with --tls-ca,
--tls-cert, --tls-key) or a unix socket path (e.g. the target's socket
forwarded over SSH).

--copy (stop-and-copy) is the only mode so far: the task is checkpointed,
its checkpoint copied through containerd's content API, and restored on the
target. The target is checked before the source is touched; a failure after
that puts the source back from its checkpoint and removes what was made on
the target. Interrupting (Ctrl-C) does the same until the task runs on the
target. Without --copy (post-copy) the command fails: not yet implemented.

See docs/migrate.md.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "address", Value: "/run/containerd/containerd.sock", Usage: "the source containerd's socket", EnvVars: []string{"CONTAINERD_ADDRESS"}},
			&cli.StringFlag{Name: "namespace", Aliases: []string{"n"}, Value: "default", Usage: "containerd namespace (the same on the target)", EnvVars: []string{"CONTAINERD_NAMESPACE"}},
			&cli.StringFlag{Name: "to", Required: true, Usage: "target containerd: tcp://HOST:PORT or a unix socket path"},
			&cli.StringFlag{Name: "tls-ca", Usage: "CA that signed the target's server certificate (PEM)"},
			&cli.StringFlag{Name: "tls-cert", Usage: "client certificate the target's tcp_tls_ca trusts (PEM)"},
			&cli.StringFlag{Name: "tls-key", Usage: "the client certificate's key (PEM)"},
			&cli.BoolFlag{Name: "copy", Usage: "stop-and-copy: all memory is moved before the container runs on the target"},
			&cli.StringFlag{Name: "stdio", Value: "null", Usage: "the restored task's stdio on the target: null, file:///PATH (a log on the target), fifo:DIR (FIFOs to attach to; DIR on the target's filesystem)"},
			&cli.DurationFlag{Name: "timeout", Value: migrate.DefaultTimeout, Usage: "bound for connecting to either containerd and each check"},
		},
		Action: runMigrate,
	})
}

func runMigrate(c *cli.Context) error {
	if c.NArg() != 1 {
		return fmt.Errorf("migrate needs one container id")
	}
	// Ctrl-C or SIGTERM ends the move; Run puts the source back.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := migrate.Run(ctx, migrate.Config{
		Source:    migrate.Endpoint{Address: c.String("address")},
		Target:    migrate.Endpoint{Address: c.String("to"), CA: c.String("tls-ca"), Cert: c.String("tls-cert"), Key: c.String("tls-key")},
		Namespace: c.String("namespace"),
		ID:        c.Args().First(),
		Copy:      c.Bool("copy"),
		Stdio:     migrate.Stdio(c.String("stdio")),
		Timeout:   c.Duration("timeout"),
		Log:       logrus.WithField("cmd", "migrate"),
	})
	if err != nil {
		return err
	}
	fmt.Printf("moved %s to %s: downtime %s, %d bytes copied\n", c.Args().First(), c.String("to"), res.Downtime.Round(1e6), res.Copied)
	return nil
}
