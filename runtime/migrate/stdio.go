package migrate

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// Stdio says where the restored task's stdio goes on the target. The
// source's FIFOs belong to a client on the source host, so they cannot
// follow the container:
//
//	""/"null"      none
//	"file:///PATH" the target shim appends stdout and stderr to PATH on
//	               the target host
//	"fifo:DIR"     FIFOs DIR/ID-stdin, -stdout (and -stderr without a
//	               terminal), made by this client, so DIR must be on the
//	               target host's filesystem (the client runs there, or
//	               both see it); attach with containerd's client later
//	               (`ctr task attach`)
type Stdio string

// pathsIO hands containerd stdio paths and does no copying itself: the
// task's stdio outlives this client.
type pathsIO struct{ cfg cio.Config }

func (p *pathsIO) Config() cio.Config { return p.cfg }
func (p *pathsIO) Cancel()            {}
func (p *pathsIO) Wait()              {}
func (p *pathsIO) Close() error       { return nil }

func withPaths(cfg cio.Config) cio.Creator {
	return func(string) (cio.IO, error) { return &pathsIO{cfg: cfg}, nil }
}

// validate checks the form only; creator makes the FIFOs.
func (s Stdio) validate() error {
	v := string(s)
	var p string
	switch {
	case v == "" || v == "null":
		return nil
	case strings.HasPrefix(v, "file://"):
		p = strings.TrimPrefix(v, "file://")
	case strings.HasPrefix(v, "fifo:"):
		p = strings.TrimPrefix(v, "fifo:")
	default:
		return fmt.Errorf("stdio %q: want null, file:///PATH or fifo:DIR: %w", v, errdefs.ErrInvalidArgument)
	}
	if !filepath.IsAbs(p) {
		return fmt.Errorf("stdio %q: the path must be absolute: %w", v, errdefs.ErrInvalidArgument)
	}
	return nil
}

// creator returns the cio.Creator for the target task, and a cleanup that
// removes FIFOs it made (for a failed move).
func (s Stdio) creator(id string, terminal bool) (cio.Creator, func(), error) {
	if err := s.validate(); err != nil {
		return nil, nil, err
	}
	v := string(s)
	switch {
	case strings.HasPrefix(v, "file://"):
		return cio.LogFile(strings.TrimPrefix(v, "file://")), func() {}, nil
	case strings.HasPrefix(v, "fifo:"):
		return fifos(strings.TrimPrefix(v, "fifo:"), id, terminal)
	}
	return cio.NullIO, func() {}, nil
}

func fifos(dir, id string, terminal bool) (cio.Creator, func(), error) {
	cfg := cio.Config{
		Terminal: terminal,
		Stdin:    filepath.Join(dir, id+"-stdin"),
		Stdout:   filepath.Join(dir, id+"-stdout"),
	}
	paths := []string{cfg.Stdin, cfg.Stdout}
	if !terminal {
		cfg.Stderr = filepath.Join(dir, id+"-stderr")
		paths = append(paths, cfg.Stderr)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("stdio FIFO dir: %w", err)
	}
	var made []string
	remove := func() {
		for _, p := range made {
			os.Remove(p)
		}
	}
	for _, p := range paths {
		if err := unix.Mkfifo(p, 0o600); err != nil {
			remove()
			return nil, nil, fmt.Errorf("stdio FIFO %s: %w", p, err)
		}
		made = append(made, p)
	}
	return withPaths(cfg), remove, nil
}
