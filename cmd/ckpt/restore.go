package main

import (
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"time"

	"github.com/ckpt-dev/ckpt/runtime/container"
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"
)

func init() {
	commands = append(commands, &cli.Command{
		Name:      "restore",
		Usage:     "restore a checkpoint as a container runc manages",
		ArgsUsage: "ID",
		Description: `Restores the checkpoint in --image-path as container ID under runc's --root,
with the bundle's config.json. Afterwards runc manages the container
(runc state/exec/kill/delete).

Stdio: the restored init gets new stdio where it had a pipe or a file outside
the container; that stdio is --stdin/--stdout/--stderr (a file, appended to),
or with neither --detach nor those flags ckpt's own, and ckpt then waits for
the container's init and exits with its status. A file must be of the same
kind as at checkpoint (CRIU checks it). With --detach, missing ones are
/dev/null. A container with a terminal needs --console-socket: the pty master
is sent there as runc does.

--lazy restores without reading the memory first: criu lazy-pages fills it in
on demand and in the background, from the images or, for a checkpoint made
with --lazy-pages, from the source's --page-server. ckpt stays until every
page is in (with --detach too): the daemon is its child, and a container
whose daemon is gone must not run on (its missing pages would read as zeros).`,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "root", Value: defaultRuncRoot, Usage: "runc's root dir"},
			&cli.StringFlag{Name: "runc", Value: "runc", Usage: "runc binary whose version is checked"},
			&cli.StringFlag{Name: "bundle", Aliases: []string{"b"}, Value: ".", Usage: "bundle with config.json"},
			&cli.StringFlag{Name: "image-path", Required: true, Usage: "the checkpoint's dir"},
			&cli.StringFlag{Name: "work-path", Usage: "dir for CRIU's log (default: the image dir)"},
			&cli.BoolFlag{Name: "detach", Aliases: []string{"d"}, Usage: "return once the container runs"},
			&cli.StringFlag{Name: "console-socket", Usage: "unix socket that receives the pty master"},
			&cli.StringFlag{Name: "stdin", Usage: "file for the init's stdin"},
			&cli.StringFlag{Name: "stdout", Usage: "file for the init's stdout"},
			&cli.StringFlag{Name: "stderr", Usage: "file for the init's stderr"},
			&cli.StringFlag{Name: "pid-file", Usage: "write the restored init's pid here"},
			&cli.StringSliceFlag{Name: "empty-ns", Usage: "namespaces to restore empty (only \"network\")"},
			&cli.BoolFlag{Name: "lazy", Aliases: []string{"lazy-pages"}, Usage: "run before the memory is read; it arrives on demand"},
			&cli.StringFlag{Name: "page-server", Usage: "ADDR:PORT of the source's page server (checkpoint --lazy-pages)"},
			&cli.DurationFlag{Name: "transfer-timeout", Usage: "longest the lazy transfer may take; then the container is killed (default 10m)"},
		}, tlsFlags()...),
		Action: restoreAction,
	})
}

func restoreAction(c *cli.Context) error {
	if c.NArg() != 1 {
		return cli.Exit("ckpt restore: want exactly one container id", 2)
	}
	emptyNet, err := emptyNS(c.StringSlice("empty-ns"))
	if err != nil {
		return err
	}
	opts := container.RestoreOptions{
		Root: c.String("root"), ID: c.Args().First(), Bundle: c.String("bundle"), Runc: c.String("runc"),
		ImagePath: c.String("image-path"), WorkPath: c.String("work-path"), EmptyNetNS: emptyNet,
		CriuPath: criuPath(c), LazyPages: c.Bool("lazy"), PageServer: c.String("page-server"),
		TLS: tlsOptions(c), TransferTimeout: c.Duration("transfer-timeout"),
	}
	named := false
	for i, name := range []string{"stdin", "stdout", "stderr"} {
		p := c.String(name)
		if p == "" {
			continue
		}
		named = true
		flags := os.O_WRONLY | os.O_APPEND | os.O_CREATE
		if i == 0 {
			flags = os.O_RDONLY
		}
		f, err := os.OpenFile(p, flags, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		opts.Stdio[i] = f
	}
	attached := !c.Bool("detach") && !named
	if attached {
		opts.Stdio = [3]*os.File{os.Stdin, os.Stdout, os.Stderr}
	}
	if sock := c.String("console-socket"); sock != "" {
		opts.Console = func(master *os.File, init bool) error {
			if !init {
				// Another session's terminal (an exec's): like the
				// shim, nobody here can take it; closing hangs it up.
				return master.Close()
			}
			return sendConsole(sock, master)
		}
	}

	start := time.Now()
	r, err := container.StartRestore(c.Context, opts)
	if err != nil {
		return err
	}
	if err := r.Finish(c.Context); err != nil {
		return err
	}
	pid := r.Pid()
	if p := c.String("pid-file"); p != "" {
		if err := os.WriteFile(p, []byte(strconv.Itoa(pid)), 0o644); err != nil {
			return err
		}
	}
	if opts.LazyPages {
		fmt.Fprintf(os.Stderr, "%s running after %s\n", opts.ID, time.Since(start).Round(time.Millisecond))
	}
	if !attached {
		if !opts.LazyPages {
			return nil
		}
		<-r.PagesIn()
		if err := r.LazyErr(); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "%s: all pages in after %s\n", opts.ID, time.Since(start).Round(time.Millisecond))
		return nil
	}
	if opts.LazyPages {
		go func() {
			<-r.PagesIn()
			if err := r.LazyErr(); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return
			}
			fmt.Fprintf(os.Stderr, "%s: all pages in after %s\n", opts.ID, time.Since(start).Round(time.Millisecond))
		}()
	}
	return cli.Exit("", waitInit(pid))
}

// sendConsole sends the pty master over the console socket the way runc
// does (the file's name as data, the fd as SCM_RIGHTS) and closes ours.
func sendConsole(path string, master *os.File) error {
	defer master.Close()
	conn, err := net.Dial("unix", path)
	if err != nil {
		return fmt.Errorf("console socket: %w", err)
	}
	defer conn.Close()
	rc, err := master.SyscallConn()
	if err != nil {
		return err
	}
	var sendErr error
	// Control, not Fd(): Fd() would put the master in blocking mode.
	err = rc.Control(func(fd uintptr) {
		_, _, sendErr = conn.(*net.UnixConn).WriteMsgUnix([]byte(master.Name()), unix.UnixRights(int(fd)), nil)
	})
	if err != nil {
		return err
	}
	return sendErr
}

// waitInit waits for the restored init, our child (CRIU restores it as a
// sibling of itself), forwarding SIGINT and SIGTERM, and returns its exit
// status the way a shell reports it.
func waitInit(pid int) int {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, unix.SIGINT, unix.SIGTERM, unix.SIGHUP)
	defer signal.Stop(sigs)
	go func() {
		for s := range sigs {
			unix.Kill(pid, s.(unix.Signal))
		}
	}()
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(pid, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 1
		}
		break
	}
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}
