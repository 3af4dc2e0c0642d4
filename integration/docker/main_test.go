// Package docker_test runs Docker end to end on ckpt's shim: for Docker 28
// and 26 (installed by scripts/setup-docker.sh), a private containerd and
// dockerd in a network namespace of their own (bridge, iptables rules and
// all), a busybox image loaded from a tar built here, and the checkpoint
// commands users type: run, checkpoint create/ls/rm, start --checkpoint,
// attach, exec, stop, rm. The same scenarios run through containerd's runc
// shim, whose results are reported beside ckpt's.
package docker_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ckpt-dev/ckpt/integration/internal/testutil"
)

// prefix is where scripts/setup-docker.sh installs the engines.
func prefix() string {
	if p := os.Getenv("CKPT_DOCKER_PREFIX"); p != "" {
		return p
	}
	return "/opt/ckpt-docker"
}

// requireDocker skips (outside CI) or fails (in CI) when Docker <version>
// or what the test runs it with is missing.
func requireDocker(t *testing.T, version string) string {
	t.Helper()
	testutil.Require(t, "root", "containerd", "containerd-shim-runc-v2", "runc", "criu", "ip", "nsenter", "iptables", "sleep")
	bin := filepath.Join(prefix(), version, "bin")
	var missing []string
	for _, b := range []string{"dockerd", "docker", "docker-init", "docker-proxy"} {
		if _, err := exec.LookPath(filepath.Join(bin, b)); err != nil {
			missing = append(missing, filepath.Join(bin, b))
		}
	}
	if len(missing) > 0 {
		msg := fmt.Sprintf("needs Docker %s: %s (run scripts/setup-docker.sh as root)", version, strings.Join(missing, ", "))
		if testutil.InCI() {
			t.Fatalf("CI: %s", msg)
		}
		t.Skipf("SKIPPED, NOT TESTED: %s", msg)
	}
	return bin
}

var shim struct {
	once sync.Once
	dir  string
	err  error
}

// shimDir builds ckpt's shim from this tree, once, into a dir that goes
// first on containerd's PATH.
func shimDir(t *testing.T) string {
	t.Helper()
	shim.once.Do(func() {
		shim.dir, shim.err = os.MkdirTemp("", "ckpt-docker-shim")
		if shim.err != nil {
			return
		}
		shim.err = buildShim(shim.dir)
	})
	if shim.err != nil {
		t.Fatalf("build the shim: %v", shim.err)
	}
	return shim.dir
}

func buildShim(dir string) error {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go" // where scripts/setup.sh puts Go
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, goBin, "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return fmt.Errorf("not inside the ckpt module")
	}
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", filepath.Join(dir, "containerd-shim-ckpt-v2"), "./cmd/containerd-shim-ckpt-v2")
	cmd.Dir = filepath.Dir(mod)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%w\n%s", err, out)
	}
	return nil
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shim.dir != "" {
		os.RemoveAll(shim.dir)
	}
	os.Exit(code)
}

func TestDocker28(t *testing.T) { runEngine(t, "28") }

func TestDocker26(t *testing.T) { runEngine(t, "26") }

// runEngine runs every scenario on one Docker version, through ckpt and
// through the runc shim.
func runEngine(t *testing.T, version string) {
	bin := requireDocker(t, version)
	e := startEngine(t, version, bin, shimDir(t))
	for _, rt := range []runtimeCase{ckptRuntime(), runcPeer()} {
		t.Run(rt.name, func(t *testing.T) {
			for _, sc := range scenarios {
				t.Run(sc.name, func(t *testing.T) {
					defer e.dumpOnFailure(t)
					sc.run(t, e, rt)
				})
			}
		})
	}
	t.Run("ckpt/options", func(t *testing.T) {
		defer e.dumpOnFailure(t)
		testOptions(t, e)
	})
}
