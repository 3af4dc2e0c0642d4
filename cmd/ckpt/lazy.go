package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/ckpt-dev/ckpt/runtime/container"
	"github.com/ckpt-dev/ckpt/runtime/image"
	"github.com/urfave/cli/v2"
)

// tlsFlags are the page server's TLS flags, the same for checkpoint and
// restore (CRIU's names).
func tlsFlags() []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "tls", Usage: "TLS for the page server"},
		&cli.StringFlag{Name: "tls-cacert", Usage: "CA certificate for the page server's TLS (PEM)"},
		&cli.StringFlag{Name: "tls-cert", Usage: "certificate for the page server's TLS (PEM)"},
		&cli.StringFlag{Name: "tls-key", Usage: "private key for the page server's TLS (PEM)"},
	}
}

func tlsOptions(c *cli.Context) container.TLS {
	return container.TLS{
		Enabled: c.Bool("tls") || c.IsSet("tls-cacert") || c.IsSet("tls-cert") || c.IsSet("tls-key"),
		CACert:  c.String("tls-cacert"), Cert: c.String("tls-cert"), Key: c.String("tls-key"),
	}
}

// lazyCheckpoint runs a lazy dump: it reports status-ready (on stderr and
// --status-fd) and waits for the transfer. SIGINT or SIGTERM abort it:
// the container is thawed and runs on.
func lazyCheckpoint(c *cli.Context, opts container.CheckpointOptions) (*image.Metadata, error) {
	var status *os.File
	if fd := c.Int("status-fd"); fd >= 0 {
		status = os.NewFile(uintptr(fd), "status-fd")
		if status == nil {
			return nil, fmt.Errorf("--status-fd %d is not open", fd)
		}
		defer status.Close()
	}
	lc, err := container.StartCheckpoint(c.Context, opts)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(os.Stderr, "images of %s written to %s; serving its memory at %s\n", opts.ID, opts.ImagePath, opts.PageServer)
	if status != nil {
		if _, err := status.Write([]byte{0}); err != nil {
			fmt.Fprintf(os.Stderr, "status fd: %v\n", err)
		}
		status.Close()
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)
	select {
	case <-lc.Done():
	case s := <-sig:
		if err := lc.Abort(context.Background()); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("lazy checkpoint of %s aborted by %s: the container runs on", opts.ID, s)
	}
	return lc.Wait(context.Background())
}
