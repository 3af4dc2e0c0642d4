package shim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"sort"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/log"
)

// binaryLogger is containerd's `binary://` stdio: a logging program gets
// the process's stdout and stderr pipes as fds 3 and 4 and closes fd 5
// once it is ready to read them. nerdctl runs every detached container
// this way (`binary:///usr/local/bin/nerdctl?_NERDCTL_INTERNAL_LOGGING=
// <data root>`), so without it `nerdctl run -d` cannot start a task.
type binaryLogger struct {
	path string
	args []string
	env  []string

	cmd  *exec.Cmd
	done chan struct{}
}

// binaryReadyTimeout bounds the wait for the logger to close fd 5 (a
// variable for the tests).
var binaryReadyTimeout = 10 * time.Second

// binaryExitTimeout bounds the wait for the logger to end once the process
// is gone (its pipes at EOF); it is killed then.
const binaryExitTimeout = 10 * time.Second

// newBinaryLogger reads a binary:// URI: the path is the program, each
// query key an argument followed by its first value (sorted, so that the
// order does not depend on a map).
func newBinaryLogger(ctx context.Context, u *url.URL, id string) (*binaryLogger, error) {
	if u.Path == "" {
		return nil, fmt.Errorf("binary stdio uri %q names no program: %w", u.String(), errdefs.ErrInvalidArgument)
	}
	q := u.Query()
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var args []string
	for _, k := range keys {
		args = append(args, k)
		if vs := q[k]; len(vs) > 0 {
			args = append(args, vs[0])
		}
	}
	ns, _ := namespaces.Namespace(ctx)
	return &binaryLogger{
		path: u.Path, args: args,
		env: append(os.Environ(), "CONTAINER_ID="+id, "CONTAINER_NAMESPACE="+ns),
	}, nil
}

// start runs the logger with stdout and stderr (the read ends of the
// process's pipes; nil for a stream the process has not) and waits until
// it is ready. The shim keeps no copy of either: the logger reads EOF
// once the process's side is closed.
func (b *binaryLogger) start(ctx context.Context, stdout, stderr *os.File) error {
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer readyR.Close()
	files := []*os.File{stdout, stderr, readyW}
	for i, f := range files[:2] {
		if f == nil {
			// The logger expects fds 3 and 4; an absent stream (a
			// terminal's stderr) is a pipe at EOF, as containerd's runc
			// shim gives it: nerdctl's logger fails on /dev/null there.
			r, w, err := os.Pipe()
			if err != nil {
				readyW.Close()
				return err
			}
			w.Close()
			files[i] = r
			defer r.Close()
		}
	}
	cmd := exec.Command(b.path, b.args...)
	cmd.Env = b.env
	cmd.ExtraFiles = files
	// Its own process group: a signal to the shim's group is not its.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Started and waited through the shim's reaper, which reaps every
	// child of the shim: cmd.Wait would find none.
	ec, err := runc.Monitor.Start(cmd)
	readyW.Close()
	if err != nil {
		return fmt.Errorf("start the logging binary %s: %w", b.path, err)
	}
	b.cmd, b.done = cmd, make(chan struct{})
	go func() {
		if status, err := runc.Monitor.Wait(cmd, ec); err != nil || status != 0 {
			log.G(ctx).WithError(err).WithField("logger", b.path).WithField("status", status).Warn("the logging binary failed")
		}
		close(b.done)
	}()
	ready := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, readyR)
		ready <- err
	}()
	select {
	case err := <-ready:
		if err != nil && !errors.Is(err, os.ErrClosed) {
			b.kill()
			return fmt.Errorf("wait for the logging binary %s: %w", b.path, err)
		}
		return nil
	case <-b.done:
		// It closed fd 5 by exiting; whatever it read is lost.
		return fmt.Errorf("the logging binary %s exited before it was ready: %w", b.path, errdefs.ErrUnavailable)
	case <-time.After(binaryReadyTimeout):
		b.kill()
		return fmt.Errorf("the logging binary %s was not ready within %s: %w", b.path, binaryReadyTimeout, errdefs.ErrUnavailable)
	}
}

// wait returns once the logger has exited (it has written everything),
// killing it after binaryExitTimeout.
func (b *binaryLogger) wait() {
	if b.cmd == nil {
		return
	}
	select {
	case <-b.done:
	case <-time.After(binaryExitTimeout):
		b.kill()
	}
}

// kill ends the logger and reaps it.
func (b *binaryLogger) kill() {
	if b.cmd == nil {
		return
	}
	b.cmd.Process.Kill()
	select {
	case <-b.done:
	case <-time.After(5 * time.Second):
	}
}
