// Package nerdctl_test runs nerdctl end to end on ckpt's shim, as users
// type it: `nerdctl run --runtime io.containerd.ckpt.v2` on the default
// bridge network and with --net none, `nerdctl checkpoint create` (with
// and without --leave-running), `nerdctl start --checkpoint`, then exec,
// stop and rm. The same scenarios run on containerd's runc shim, whose
// results are reported beside ckpt's.
//
// nerdctl talks to a private containerd (harness) that runs, with its
// shims, nerdctl's OCI hooks, the CNI plugins and their iptables rules, in
// a network and mount namespace of the test's own (harness.Sandbox):
// nerdctl's data root, its CNI conf dir and the CNI plugins' state dir
// (/var/lib/cni, bound over in the private mount namespace) are the
// test's, and nothing touches the host's network.
package nerdctl_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ckpt-dev/ckpt/integration/containerd/harness"
	"github.com/ckpt-dev/ckpt/integration/internal/testutil"
)

// cniBin is where scripts/setup-clients.sh installs the CNI plugins.
const cniBin = "/opt/cni/bin"

// env is the sandbox, its containerd and nerdctl's dirs.
type env struct {
	sb  *harness.Sandbox
	d   *harness.Daemon
	dir string // data root, CNI conf and CNI state live under it
}

var shared struct {
	once sync.Once
	env  *env
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if e := shared.env; e != nil {
		if err := e.stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stop:", err)
		}
	}
	os.Exit(code)
}

// start is the package's env, made by the first test that needs it and
// removed by TestMain.
func start(t *testing.T) *env {
	t.Helper()
	testutil.Require(t, "root", "containerd", "runc", "criu", "nerdctl", "ip", "nsenter", "iptables", "curl",
		filepath.Join(cniBin, "bridge"), filepath.Join(cniBin, "host-local"), filepath.Join(cniBin, "portmap"),
		filepath.Join(cniBin, "firewall"), filepath.Join(cniBin, "tuning"), filepath.Join(cniBin, "loopback"))
	shared.once.Do(func() {
		shared.env, shared.err = newEnv(t)
	})
	if shared.err != nil {
		t.Fatalf("nerdctl's containerd: %v", shared.err)
	}
	if shared.env == nil {
		t.Fatal("nerdctl's containerd did not start (see the first test's failure)")
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("containerd log (tail):\n%s", tail(shared.env.d.Log(), 60))
		}
	})
	return shared.env
}

func newEnv(t *testing.T) (_ *env, retErr error) {
	rootfs, err := os.MkdirTemp("", "ckpt-busybox")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(rootfs)
	testutil.Rootfs(t, rootfs)
	// Short: unix socket paths of nerdctl's and containerd's live under it.
	dir, err := os.MkdirTemp("", "ckn-")
	if err != nil {
		return nil, err
	}
	e := &env{dir: dir}
	defer func() {
		if retErr != nil {
			e.stop()
		}
	}()
	for _, d := range []string{"nerdctl", "cni-conf", "cni-state"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	if e.sb, err = harness.NewSandbox(fmt.Sprintf("cli-nerdctl-%d", os.Getpid()),
		harness.Bind{Source: filepath.Join(dir, "cni-state"), Target: "/var/lib/cni"}); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if e.d, err = harness.Start(ctx, rootfs, harness.WithSandbox(e.sb)); err != nil {
		return nil, err
	}
	return e, nil
}

// stop removes the containers (their poststop hooks release the network),
// containerd, the sandbox and the dirs.
func (e *env) stop() error {
	var errs []string
	if e.d != nil {
		if err := e.d.Stop(); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if e.sb != nil {
		if err := e.sb.Close(); err != nil {
			errs = append(errs, err.Error())
		}
	}
	harness.UnmountUnder(e.dir)
	if err := os.RemoveAll(e.dir); err != nil {
		errs = append(errs, err.Error())
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// nerdctl runs nerdctl in the sandbox with the env's globals; the output
// is stdout, the error carries stderr.
func (e *env) nerdctl(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	argv := append([]string{"nerdctl",
		"--address", e.d.Address, "--namespace", e.d.Namespace,
		"--data-root", filepath.Join(e.dir, "nerdctl"),
		"--cni-path", cniBin, "--cni-netconfpath", filepath.Join(e.dir, "cni-conf"),
		"--cgroup-manager", "cgroupfs", "--snapshotter", "overlayfs",
	}, args...)
	cmd := e.sb.CommandContext(ctx, argv...)
	cmd.Env = append(os.Environ(), "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("nerdctl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// inSandbox runs argv in the sandbox's network namespace (busybox's
// wget, ip) and returns its output.
func (e *env) inSandbox(ctx context.Context, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := e.sb.CommandContext(ctx, argv...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// testContext bounds a test.
func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}
