package cri_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ckpt-dev/ckpt/integration/containerd/harness"
	"github.com/ckpt-dev/ckpt/integration/internal/testutil"
	"github.com/ckpt-dev/ckpt/runtime/image"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestCrictlCheckpointRestore is what an operator types: crictl runp,
// create and start a counter on ckpt's handler, `crictl checkpoint
// --export`, then a restore with crictl create (the archive as the
// image) and start in a new pod. containerd 2.4 removed the restore
// through CreateContainer (containerd #13871): there the create must
// fail, saying what it could not do, and leave nothing behind.
func TestCrictlCheckpointRestore(t *testing.T) {
	e := env(t)
	testutil.Require(t, "crictl")
	ctx := testContext(t)
	c := &crictl{e: e, dir: t.TempDir()}
	if err := os.WriteFile(filepath.Join(c.dir, "crictl.yaml"), nil, 0o644); err != nil {
		t.Fatal(err)
	}

	orig := c.pod(t, ctx, "crictl-counter")
	id, err := c.run(ctx, "create", orig.id, c.json(t, "ctr.json", counterConfig(harness.ImageName, kind{})), orig.configFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.run(ctx, "start", id); err != nil {
		t.Fatal(err)
	}
	origLog := filepath.Join(orig.logDir, counterLog)
	counts, err := waitCounts(origLog, 0, 5, 5, 30*time.Second)
	if err != nil {
		t.Fatalf("the counter does not count: %v", err)
	}

	// crictl's default timeout (2 s) is shorter than a checkpoint.
	archive := filepath.Join(c.dir, "checkpoint.tar")
	before := last(counts)
	if _, err := c.run(ctx, "checkpoint", "--export="+archive, id); err != nil {
		t.Fatal(err)
	}
	counts, err = waitCounts(origLog, 0, 1, before+10, 30*time.Second)
	if err != nil {
		t.Fatalf("the counter stopped after crictl checkpoint (kubelet expects it to run on): %v", err)
	}
	after := last(counts)
	entries, err := readArchive(archive)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"checkpoint/pstree.img", "checkpoint/" + image.MetadataFile, "config.dump", "spec.dump"} {
		if _, ok := entries[want]; !ok {
			t.Errorf("the archive has no %s", want)
		}
	}

	restored := c.pod(t, ctx, "crictl-restored")
	rid, err := c.run(ctx, "create", restored.id, c.json(t, "restore.json", counterConfig(archive, kind{})), restored.configFile)
	if !restoreViaCreate(e) {
		if err == nil {
			t.Fatalf("containerd %s restored through CreateContainer (container %s), which it no longer has", e.version, rid)
		}
		// The image is the archive's path, which 2.4 takes for an image
		// reference: the error names it.
		if !strings.Contains(err.Error(), archive) || !strings.Contains(err.Error(), "code = NotFound") {
			t.Errorf("the failed restore on containerd %s is not a NotFound naming the archive: %v", e.version, err)
		}
		t.Logf("containerd %s: crictl create with a checkpoint archive fails as it should: %v", e.version, err)
		c.noContainers(t, ctx, restored.id)
		return
	}
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	log := filepath.Join(restored.logDir, counterLog)
	offset := fileSize(log)
	if _, err := c.run(ctx, "start", rid); err != nil {
		t.Fatalf("restore: %v", err)
	}
	got, err := waitCounts(log, offset, 5, 0, 30*time.Second)
	if err != nil {
		t.Fatalf("the restored counter: %v", err)
	}
	if got[0] <= before || got[0] > after {
		t.Errorf("the restored counter starts at %d; the checkpoint was taken between %d and %d", got[0], before, after)
	}
	for i := 1; i < len(got); i++ {
		if got[i] != got[i-1]+1 {
			t.Fatalf("the restored counter does not count on one by one: %v", got)
		}
	}
	t.Logf("crictl checkpoint after count %d; the restored counter went on with %v", before, got)
}

// crictl runs crictl against the daemon's CRI socket.
type crictl struct {
	e   *criEnv
	dir string
}

// crictlPod is a pod crictl ran, with the config file crictl create needs.
type crictlPod struct {
	*pod
	configFile string
}

func (c *crictl) run(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	ep := "unix://" + c.e.d.Address
	argv := append([]string{"--config", filepath.Join(c.dir, "crictl.yaml"),
		"--runtime-endpoint", ep, "--image-endpoint", ep, "-t", "60s"}, args...)
	out, err := exec.CommandContext(ctx, "crictl", argv...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("crictl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return strings.TrimSpace(string(out)), nil
}

// json writes v as a crictl config file.
func (c *crictl) json(t *testing.T, name string, v any) string {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(c.dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// pod runs a pod with `crictl runp --runtime ckpt`; it is removed when
// the test ends.
func (c *crictl) pod(t *testing.T, ctx context.Context, name string) *crictlPod {
	t.Helper()
	p := &pod{logDir: filepath.Join(c.dir, name+"-logs")}
	if err := os.MkdirAll(p.logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	p.config = &runtime.PodSandboxConfig{
		Metadata: &runtime.PodSandboxMetadata{
			Name: name, Namespace: "ckpt-test", Uid: fmt.Sprintf("ckpt-%d-%s", os.Getpid(), name),
		},
		LogDirectory: p.logDir,
		Linux: &runtime.LinuxPodSandboxConfig{
			CgroupParent: c.e.d.CgroupParent,
			SecurityContext: &runtime.LinuxSandboxSecurityContext{
				NamespaceOptions: namespaces(true, false),
			},
		},
	}
	cfg := c.json(t, name+"-pod.json", p.config)
	id, err := c.run(ctx, "runp", "--runtime", harness.CkptHandler, cfg)
	if err != nil {
		t.Fatal(err)
	}
	p.id = id
	t.Cleanup(func() {
		if err := removePod(c.e, p); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return &crictlPod{pod: p, configFile: cfg}
}

// noContainers checks that a failed create left no container in the pod.
func (c *crictl) noContainers(t *testing.T, ctx context.Context, podID string) {
	t.Helper()
	resp, err := c.e.runtime.ListContainers(ctx, &runtime.ListContainersRequest{
		Filter: &runtime.ContainerFilter{PodSandboxId: podID},
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(resp.GetContainers()); n != 0 {
		t.Errorf("the failed restore left %d containers in the pod", n)
	}
}
