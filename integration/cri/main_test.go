// Package cri_test drives ckpt's shim the way Kubernetes does: kubelet's
// CRI calls (RunPodSandbox, CreateContainer, StartContainer,
// CheckpointContainer, and restore through CreateContainer with a
// checkpoint archive as the image) to a private containerd 2.2 with its
// CRI plugin on, ckpt's shim registered as the runtime handler "ckpt",
// and containerd's runc shim as "runc", the peer.
package cri_test

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/ckpt-dev/ckpt/integration/containerd/harness"
	"github.com/ckpt-dev/ckpt/integration/internal/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

var shared struct {
	once sync.Once
	env  *criEnv
	err  error
}

// criEnv is the private containerd and CRI clients on its socket.
type criEnv struct {
	d       *harness.Daemon
	conn    *grpc.ClientConn
	runtime runtime.RuntimeServiceClient
	images  runtime.ImageServiceClient
	// version is the containerd under test (harness.ContainerdBinEnv).
	version harness.Version
}

// restoreViaCreate reports whether the containerd under test restores a
// checkpoint through CreateContainer: 2.4 removed it (containerd #13871).
func restoreViaCreate(e *criEnv) bool { return !e.version.AtLeast(2, 4) }

func TestMain(m *testing.M) {
	code := m.Run()
	if e := shared.env; e != nil {
		if e.conn != nil {
			e.conn.Close()
		}
		if err := e.d.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stop containerd:", err)
		}
	}
	os.Exit(code)
}

// env is the package's containerd, started by the first test that needs
// it and stopped by TestMain.
func env(t *testing.T) *criEnv {
	t.Helper()
	testutil.Require(t, "root", "containerd", "runc", "criu")
	shared.once.Do(func() {
		rootfs, err := os.MkdirTemp("", "ckpt-busybox")
		if err != nil {
			shared.err = err
			return
		}
		defer os.RemoveAll(rootfs)
		testutil.Rootfs(t, rootfs)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		shared.env, shared.err = startCRI(ctx, rootfs)
	})
	if shared.err != nil {
		t.Fatalf("private containerd with CRI: %v", shared.err)
	}
	if shared.env == nil {
		t.Fatal("private containerd did not start (see the first test's failure)")
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("containerd log (tail):\n%s", lastLines(shared.env.d.Log(), 80))
		}
	})
	return shared.env
}

func startCRI(ctx context.Context, rootfs string) (*criEnv, error) {
	d, err := harness.Start(ctx, rootfs, harness.WithCRI())
	if err != nil {
		return nil, err
	}
	e := &criEnv{d: d}
	if e.version, err = d.ContainerdVersion(ctx); err != nil {
		return e, err
	}
	if e.conn, err = grpc.NewClient("unix://"+d.Address, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		return e, fmt.Errorf("CRI client: %w", err)
	}
	e.runtime = runtime.NewRuntimeServiceClient(e.conn)
	e.images = runtime.NewImageServiceClient(e.conn)
	if _, err := e.runtime.Version(ctx, &runtime.VersionRequest{}); err != nil {
		return e, fmt.Errorf("CRI Version: %w\n%s", err, lastLines(d.Log(), 40))
	}
	// The CRI plugin learns of imported images from containerd's events.
	for _, img := range []string{harness.PauseImageName, harness.ImageName} {
		if err := e.waitImage(ctx, img); err != nil {
			return e, err
		}
	}
	return e, nil
}

func (e *criEnv) waitImage(ctx context.Context, name string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := e.images.ImageStatus(ctx, &runtime.ImageStatusRequest{Image: &runtime.ImageSpec{Image: name}})
		if err == nil && st.GetImage() != nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the CRI plugin does not see image %s (err %v)", name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// testContext bounds a test's CRI calls, so that a hung call fails the
// test instead of the whole run.
func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	return ctx
}
