package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/ckpt-dev/ckpt/runtime/migrate"
	"github.com/ckpt-dev/ckpt/runtime/plan"
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

Post-copy (the default) needs --page-server HOST:PORT, an address of the
source host that the target can reach: the source's shim dumps the task
without its memory and keeps it frozen while CRIU's page server there serves
the memory; the target restores the checkpoint with lazy pages, so the
container runs on the target at once and its pages follow. When the last page
has moved the source task ends and is deleted. Until the container runs on the
target, any failure (or Ctrl-C) thaws the source, which runs on, and removes
what was made on the target. After that, the source's frozen copy holds the
pages not yet moved: if the source host is lost, so is the container.
--page-tls-* secure the page server (files at the same paths on both hosts).

--copy (stop-and-copy) moves every page before the container runs on the
target: downtime grows with memory, but the move does not depend on the
source once the target runs. A failure puts the source back from its
checkpoint.

The target is checked before the source is touched. See docs/migrate.md.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "address", Value: "/run/containerd/containerd.sock", Usage: "the source containerd's socket", EnvVars: []string{"CONTAINERD_ADDRESS"}},
			&cli.StringFlag{Name: "namespace", Aliases: []string{"n"}, Value: "default", Usage: "containerd namespace (the same on the target)", EnvVars: []string{"CONTAINERD_NAMESPACE"}},
			&cli.StringFlag{Name: "to", Required: true, Usage: "target containerd: tcp://HOST:PORT or a unix socket path"},
			&cli.StringFlag{Name: "tls-ca", Usage: "CA that signed the target's server certificate (PEM)"},
			&cli.StringFlag{Name: "tls-cert", Usage: "client certificate the target's tcp_tls_ca trusts (PEM)"},
			&cli.StringFlag{Name: "tls-key", Usage: "the client certificate's key (PEM)"},
			&cli.BoolFlag{Name: "copy", Usage: "stop-and-copy: all memory is moved before the container runs on the target"},
			&cli.StringFlag{Name: "page-server", Usage: "post-copy: HOST:PORT on the source host for its page server, reachable from the target"},
			&cli.StringFlag{Name: "page-tls-ca", Usage: "post-copy: CA of the page server's and the target's certificates (PEM; same path on both hosts)"},
			&cli.StringFlag{Name: "page-tls-cert", Usage: "post-copy: certificate for both ends of the page transfer (PEM; same path on both hosts)"},
			&cli.StringFlag{Name: "page-tls-key", Usage: "post-copy: the certificate's key (PEM; same path on both hosts)"},
			&cli.BoolFlag{Name: "page-tls-no-cn-verify", Usage: "post-copy: do not check that the page server's certificate names its address"},
			&cli.DurationFlag{Name: "transfer-timeout", Value: migrate.DefaultTransferTimeout, Usage: "post-copy: longest the source stays frozen serving its memory"},
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
		Source:     migrate.Endpoint{Address: c.String("address")},
		Target:     migrate.Endpoint{Address: c.String("to"), CA: c.String("tls-ca"), Cert: c.String("tls-cert"), Key: c.String("tls-key")},
		Namespace:  c.String("namespace"),
		ID:         c.Args().First(),
		Copy:       c.Bool("copy"),
		PageServer: c.String("page-server"),
		PageTLS: plan.TLS{CACert: c.String("page-tls-ca"), Cert: c.String("page-tls-cert"), Key: c.String("page-tls-key"),
			NoCNVerify: c.Bool("page-tls-no-cn-verify")},
		TransferTimeout: c.Duration("transfer-timeout"),
		Stdio:           migrate.Stdio(c.String("stdio")),
		Timeout:         c.Duration("timeout"),
		Log:             logrus.WithField("cmd", "migrate"),
	})
	if err != nil {
		return err
	}
	fmt.Printf("moved %s to %s: downtime %s, total %s, %d bytes copied through containerd\n", c.Args().First(), c.String("to"),
		res.Downtime.Round(1e6), res.Total.Round(1e6), res.Copied)
	return nil
}
