package shim

import (
	"context"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ckpt-dev/ckpt/console"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/stdio"
	"github.com/containerd/errdefs"
	"github.com/creack/pty"
)

// TestBinaryLogger runs logging programs as containerd's binary:// stdio
// does: fds 3 and 4 are the process's stdout and stderr, closing fd 5
// says ready.
func TestBinaryLogger(t *testing.T) {
	defer func(d time.Duration) { binaryReadyTimeout = d }(binaryReadyTimeout)
	binaryReadyTimeout = time.Second
	for _, tc := range []struct {
		name   string
		script string // $2 is the output prefix (query out=...)
		check  func(t *testing.T, err error)
		want   map[string]string // file suffix -> contents
	}{
		{
			name:   "copies both streams",
			script: "exec 5>&-\ncat <&3 >\"$2.out\" & cat <&4 >\"$2.err\"\nwait\necho \"$CONTAINER_ID $CONTAINER_NAMESPACE\" >\"$2.env\"\n",
			want:   map[string]string{".out": "to stdout\n", ".err": "to stderr\n", ".env": "c1 ns1\n"},
		},
		{
			name:   "exits before ready",
			script: "exit 3\n",
			// Its exit closes fd 5 too, which reads as ready when the
			// exit is not seen first: either way start returns at once
			// (well within binaryReadyTimeout) and the logger is reaped.
			check: func(t *testing.T, err error) {
				if err != nil && !strings.Contains(err.Error(), "exited before it was ready") {
					t.Fatalf("got %v; want nil or exited before ready", err)
				}
			},
		},
		{
			name:   "never ready",
			script: "exec sleep 30\n",
			check: func(t *testing.T, err error) {
				if !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "not ready within") {
					t.Fatalf("got %v; want unavailable, not ready within", err)
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			prog := filepath.Join(dir, "logger")
			if err := os.WriteFile(prog, []byte("#!/bin/sh\n"+tc.script), 0o755); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(dir, "log")
			uri := (&url.URL{Scheme: "binary", Path: prog, RawQuery: url.Values{"out": {out}}.Encode()}).String()
			ctx := namespaces.WithNamespace(context.Background(), "ns1")
			pio, err := newProcIO(ctx, stdio.Stdio{Stdout: uri, Stderr: uri}, os.Getuid(), os.Getgid(), "c1")
			if err != nil {
				t.Fatal(err)
			}
			defer pio.close()
			start := time.Now()
			err = pio.start()
			if tc.check != nil {
				tc.check(t, err)
				if d := time.Since(start); d > binaryReadyTimeout+2*time.Second {
					t.Errorf("start took %s", d)
				}
				pio.close()
				if pio.logger.cmd != nil && pio.logger.cmd.ProcessState == nil {
					t.Error("the logger was not reaped")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if pio.pipes.parent[1] != nil || pio.pipes.parent[2] != nil {
				t.Error("the shim kept the read ends the logger has")
			}
			pio.pipes.child[1].WriteString("to stdout\n")
			pio.pipes.child[2].WriteString("to stderr\n")
			pio.pipes.CloseAfterStart()
			pio.wait()
			for suffix, want := range tc.want {
				if got, _ := os.ReadFile(out + suffix); string(got) != want {
					t.Errorf("%s: %q, want %q", suffix, got, want)
				}
			}
		})
	}
}

func TestBinaryLoggerURI(t *testing.T) {
	for _, tc := range []struct {
		uri      string
		wantArgs []string
		wantErr  bool
	}{
		{uri: "binary:///usr/local/bin/nerdctl?_NERDCTL_INTERNAL_LOGGING=%2Fvar%2Flib%2Fnerdctl%2Fabc", wantArgs: []string{"_NERDCTL_INTERNAL_LOGGING", "/var/lib/nerdctl/abc"}},
		{uri: "binary:///bin/log?b=2&a=1", wantArgs: []string{"a", "1", "b", "2"}},
		{uri: "binary:///bin/log", wantArgs: nil},
		{uri: "binary://", wantErr: true},
	} {
		u, err := url.Parse(tc.uri)
		if err != nil {
			t.Fatal(err)
		}
		b, err := newBinaryLogger(context.Background(), u, "c1")
		if tc.wantErr {
			if !errdefs.IsInvalidArgument(err) {
				t.Errorf("%s: %v; want invalid argument", tc.uri, err)
			}
			continue
		}
		if err != nil || strings.Join(b.args, " ") != strings.Join(tc.wantArgs, " ") {
			t.Errorf("%s: args %q, %v; want %q", tc.uri, b.args, err, tc.wantArgs)
		}
	}
}

// A terminal's output goes to the logging binary (nerdctl run -d -t): what
// the process writes on its terminal is in the logger's stdout, and the
// logger ends at the terminal's end.
func TestBinaryLoggerTerminal(t *testing.T) {
	dir := t.TempDir()
	prog := filepath.Join(dir, "logger")
	if err := os.WriteFile(prog, []byte("#!/bin/sh\nexec 5>&-\ncat <&3 > \"$out\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "log")
	uri := (&url.URL{Scheme: "binary", Path: prog}).String()
	ctx := namespaces.WithNamespace(context.Background(), "ns1")
	t.Setenv("out", out)
	pio, err := newProcIO(ctx, stdio.Stdio{Stdout: uri, Stderr: uri, Terminal: true}, os.Getuid(), os.Getgid(), "c1")
	if err != nil {
		t.Fatal(err)
	}
	defer pio.close()
	if err := pio.start(); err != nil {
		t.Fatal(err)
	}
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/bin/busybox", "sh", "-c", "echo on-the-terminal-$((6*7))")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tty.Close()
	master, err := console.MasterFromFile(ptmx)
	if err != nil {
		t.Fatal(err)
	}
	if err := pio.attachConsole(master); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	done := make(chan struct{})
	go func() { pio.wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the logger did not end with the terminal")
	}
	if got, _ := os.ReadFile(out); !strings.Contains(string(got), "on-the-terminal-42") {
		t.Fatalf("the logger wrote %q", got)
	}
}
