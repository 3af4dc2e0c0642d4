package cri_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ckpt-dev/ckpt/integration/containerd/harness"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// counterScript prints 1, 2, 3, ... every 100ms; the count lives in the
// shell's memory, so a restored shell continues where it was dumped. It
// also appends each count to counterFile in its rootfs, which it keeps
// open: CRIU must find that file, with the size it had at the dump, when
// it restores the fd. containerd ships it in the archive's
// rootfs-diff.tar and unpacks it between the restore's task Create and
// Start.
const counterScript = "exec 3>>" + counterFile + "; i=0; while :; do i=$((i+1)); echo $i; echo $i >&3; sleep 0.1; done"

// counterFile is the counter's file in its rootfs.
const counterFile = "/counter.out"

// counterLog is the container's log file, relative to the pod's log dir.
const counterLog = "counter.log"

// pod is a pod sandbox made through CRI.
type pod struct {
	id     string
	config *runtime.PodSandboxConfig
	logDir string
}

var podSeq atomic.Int64

// kind is what sort of container a scenario checkpoints.
type kind struct {
	name string
	// tty gives the container a terminal (a pod's `tty: true`).
	tty bool
	// sharedPid puts the pod's containers in the sandbox's pid namespace
	// (`shareProcessNamespace: true`), which CRIU then does not own.
	sharedPid bool
	// fromImage restores from an OCI checkpoint image made of the archive
	// (what a registry serves kubelet), not from the archive's path.
	fromImage bool
}

// namespaces are kubelet's for a hostNetwork pod: the node's network (no
// CNI), the pod's IPC namespace, and a pid namespace per container or,
// with sharedPid, the pod's.
func namespaces(sandbox, sharedPid bool) *runtime.NamespaceOption {
	pid := runtime.NamespaceMode_CONTAINER
	if sandbox || sharedPid {
		pid = runtime.NamespaceMode_POD
	}
	return &runtime.NamespaceOption{
		Network: runtime.NamespaceMode_NODE,
		Pid:     pid,
		Ipc:     runtime.NamespaceMode_POD,
	}
}

// podAnnotations choose a CRIU option for ckpt's checkpoints the way a
// Pod's metadata.annotations do (the CRI plugin passes them to ckpt's
// handler: harness.CheckpointAnnotations); runc's handler gets none.
var podAnnotations = map[string]string{"io.ckpt.checkpoint.file-locks": "true"}

// runPod runs a pod sandbox on the runtime handler. Removing it is the
// caller's (removePod), because the tests check that nothing is left.
func runPod(t *testing.T, e *criEnv, ctx context.Context, handler, name string, k kind) *pod {
	t.Helper()
	n := podSeq.Add(1)
	p := &pod{logDir: filepath.Join(e.d.Dir, "pod-logs", fmt.Sprintf("%s-%d", name, n))}
	if err := os.MkdirAll(p.logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	p.config = &runtime.PodSandboxConfig{
		Metadata: &runtime.PodSandboxMetadata{
			Name: name, Namespace: "ckpt-test", Uid: fmt.Sprintf("ckpt-%d-%d", os.Getpid(), n),
		},
		LogDirectory: p.logDir,
		Labels:       map[string]string{"ckpt-test": sanitize(t.Name())},
		Annotations:  podAnnotations,
		Linux: &runtime.LinuxPodSandboxConfig{
			CgroupParent: e.d.CgroupParent,
			SecurityContext: &runtime.LinuxSandboxSecurityContext{
				NamespaceOptions: namespaces(true, k.sharedPid),
			},
		},
	}
	resp, err := e.runtime.RunPodSandbox(ctx, &runtime.RunPodSandboxRequest{Config: p.config, RuntimeHandler: handler})
	if err != nil {
		t.Fatalf("RunPodSandbox (handler %s): %v", handler, err)
	}
	p.id = resp.GetPodSandboxId()
	return p
}

// removePod stops and removes the pod with its containers.
func removePod(e *criEnv, p *pod) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := e.runtime.StopPodSandbox(ctx, &runtime.StopPodSandboxRequest{PodSandboxId: p.id}); err != nil {
		return fmt.Errorf("StopPodSandbox %s: %w", p.id, err)
	}
	if _, err := e.runtime.RemovePodSandbox(ctx, &runtime.RemovePodSandboxRequest{PodSandboxId: p.id}); err != nil {
		return fmt.Errorf("RemovePodSandbox %s: %w", p.id, err)
	}
	return nil
}

// counterConfig is the counter container's config; image is an image
// name or, for a restore, the checkpoint archive's path.
func counterConfig(image string, k kind) *runtime.ContainerConfig {
	return &runtime.ContainerConfig{
		Metadata: &runtime.ContainerMetadata{Name: "counter"},
		Image:    &runtime.ImageSpec{Image: image},
		Command:  []string{"sh", "-c", counterScript},
		LogPath:  counterLog,
		Tty:      k.tty,
		Linux: &runtime.LinuxContainerConfig{
			SecurityContext: &runtime.LinuxContainerSecurityContext{NamespaceOptions: namespaces(false, k.sharedPid)},
		},
	}
}

func createContainer(ctx context.Context, e *criEnv, p *pod, cfg *runtime.ContainerConfig) (string, error) {
	resp, err := e.runtime.CreateContainer(ctx, &runtime.CreateContainerRequest{
		PodSandboxId: p.id, Config: cfg, SandboxConfig: p.config,
	})
	if err != nil {
		return "", err
	}
	return resp.GetContainerId(), nil
}

func containerState(ctx context.Context, e *criEnv, id string) (*runtime.ContainerStatus, error) {
	resp, err := e.runtime.ContainerStatus(ctx, &runtime.ContainerStatusRequest{ContainerId: id})
	if err != nil {
		return nil, err
	}
	return resp.GetStatus(), nil
}

// logCounts are the numbers the counter printed to its CRI log
// ("<time> stdout F <n>") from byte offset on.
func logCounts(path string, offset int64) ([]int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if offset > int64(len(data)) {
		return nil, fmt.Errorf("%s has %d bytes, fewer than the offset %d", path, len(data), offset)
	}
	var counts []int
	sc := bufio.NewScanner(bytes.NewReader(data[offset:]))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 4 || f[1] != "stdout" || f[2] != "F" {
			continue
		}
		if n, err := strconv.Atoi(f[3]); err == nil {
			counts = append(counts, n)
		}
	}
	return counts, nil
}

func last(counts []int) int {
	if len(counts) == 0 {
		return 0
	}
	return counts[len(counts)-1]
}

// waitCounts waits until the log, from offset on, has a count of at
// least min and at least n counts.
func waitCounts(path string, offset int64, n, min int, timeout time.Duration) ([]int, error) {
	deadline := time.Now().Add(timeout)
	for {
		counts, err := logCounts(path, offset)
		if err == nil && len(counts) >= n && last(counts) >= min {
			return counts, nil
		}
		if time.Now().After(deadline) {
			return counts, fmt.Errorf("%s: want %d counts up to >= %d after %s, have %v (err %v)", path, n, min, timeout, tailInts(counts, 10), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tailInts(v []int, n int) []int {
	if len(v) > n {
		return v[len(v)-n:]
	}
	return v
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

func sanitize(s string) string {
	return strings.Trim(regexp.MustCompile(`[^A-Za-z0-9]+`).ReplaceAllString(s, "-"), "-")
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// podsLeft lists the CRI pods and containers this package's tests made
// that still exist.
func podsLeft(ctx context.Context, e *criEnv) ([]string, error) {
	var left []string
	pods, err := e.runtime.ListPodSandbox(ctx, &runtime.ListPodSandboxRequest{})
	if err != nil {
		return nil, err
	}
	for _, p := range pods.GetItems() {
		left = append(left, "pod "+p.GetId())
	}
	ctrs, err := e.runtime.ListContainers(ctx, &runtime.ListContainersRequest{})
	if err != nil {
		return nil, err
	}
	for _, c := range ctrs.GetContainers() {
		left = append(left, "container "+c.GetId())
	}
	return left, nil
}

// runtimeRoot is where a handler's shim keeps runc's state.
func runtimeRoot(e *criEnv, handler string) string {
	if handler == harness.RuncHandler {
		return filepath.Join(e.d.Dir, "runc-shim", harness.CRINamespace)
	}
	return e.d.RuncRoot
}
