package cri_test

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ckpt-dev/ckpt/integration/containerd/harness"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// outcome is what kubelet's checkpoint and restore calls did on one
// runtime handler. Setting up the pod and the counter is not part of it:
// a failure there fails the test on any handler.
type outcome struct {
	handler string
	kind    kind
	archive string

	checkpointErr error
	// before is the count logged before CheckpointContainer; after, one
	// logged once the container had gone on counting (or not: runningErr).
	before, after int
	runningErr    error
	stateAfter    runtime.ContainerState
	entries       map[string][]byte // archive entries; small files' contents

	restoreCreateErr error
	restoreStartErr  error
	// restored are the restored counter's first counts; restoredErr says
	// why there are too few.
	restored    []int
	restoredErr error
	annotations map[string]string
	// fileErr says what is wrong with counterFile in the restored
	// container (read with ExecSync): it must count from 1, without a gap,
	// beyond the restored counter's first counts.
	fileErr error
	// stdout is what the restored counter's fd 1 links to.
	stdout string
	// origStatsErr and statsErr: kubelet polls ContainerStats, of the
	// original and the restored container; recheckpointErr: the
	// restored container checkpointed again (migrated on), and counting
	// on afterwards.
	origStatsErr    error
	statsErr        error
	recheckpointErr error

	leftovers []string // what removing the pods left behind
}

// archiveFilesRead are the archive entries whose contents outcome keeps.
var archiveFilesRead = map[string]bool{"checkpoint/ckpt.json": true, "config.dump": true}

// runScenario runs a counter in a pod on handler, checkpoints it through
// CRI, restores the archive into a new pod, and removes both pods.
func runScenario(t *testing.T, e *criEnv, ctx context.Context, handler string, k kind) *outcome {
	t.Helper()
	o := &outcome{handler: handler, kind: k, archive: filepath.Join(e.d.Dir, "archives", sanitize(t.Name())+".tar")}
	if err := os.MkdirAll(filepath.Dir(o.archive), 0o755); err != nil {
		t.Fatal(err)
	}
	var pods []*pod
	var ids []string
	removed := false
	t.Cleanup(func() {
		if !removed {
			for _, p := range pods {
				if err := removePod(e, p); err != nil {
					t.Errorf("cleanup: %v", err)
				}
			}
		}
		os.Remove(o.archive)
	})

	// 1. A pod on the handler, and a counter in it.
	orig := runPod(t, e, ctx, handler, "counter", k)
	pods = append(pods, orig)
	ids = append(ids, orig.id)
	id, err := createContainer(ctx, e, orig, counterConfig(harness.ImageName, k))
	if err != nil {
		t.Fatalf("CreateContainer: %v", err)
	}
	ids = append(ids, id)
	if _, err := e.runtime.StartContainer(ctx, &runtime.StartContainerRequest{ContainerId: id}); err != nil {
		t.Fatalf("StartContainer: %v", err)
	}
	origLog := filepath.Join(orig.logDir, counterLog)
	counts, err := waitCounts(origLog, 0, 5, 5, 30*time.Second)
	if err != nil {
		t.Fatalf("the counter does not count: %v", err)
	}

	o.origStatsErr = checkStats(ctx, e, id)

	// 2. kubelet's checkpoint: an archive, and the container goes on.
	o.before = last(counts)
	_, o.checkpointErr = e.runtime.CheckpointContainer(ctx, &runtime.CheckpointContainerRequest{
		ContainerId: id, Location: o.archive, Timeout: 120,
	})
	if o.checkpointErr == nil {
		counts, o.runningErr = waitCounts(origLog, 0, 1, o.before+10, 30*time.Second)
		o.after = last(counts)
		if st, err := containerState(ctx, e, id); err == nil {
			o.stateAfter = st.GetState()
		}
		o.entries, err = readArchive(o.archive)
		if err != nil {
			t.Fatalf("the checkpoint archive: %v", err)
		}

		// 3. Restore: CreateContainer in a new pod with the archive, or an
		// image of it, as the image, then StartContainer.
		image := restoreImage(t, e, ctx, o)
		restored := runPod(t, e, ctx, handler, "restored", k)
		pods = append(pods, restored)
		ids = append(ids, restored.id)
		o.restoreScenario(ctx, e, restored, image, &ids)
	}

	// Everything goes: pods, containers, runc state, mounts, shims.
	removed = true
	for _, p := range pods {
		if err := removePod(e, p); err != nil {
			o.leftovers = append(o.leftovers, err.Error())
		}
	}
	o.leftovers = append(o.leftovers, leftovers(ctx, e, handler, ids)...)
	return o
}

// restoreImage is what CreateContainer restores from: the archive's path
// or, for kind.fromImage, a checkpoint image made of it.
func restoreImage(t *testing.T, e *criEnv, ctx context.Context, o *outcome) string {
	t.Helper()
	if !o.kind.fromImage {
		return o.archive
	}
	image := "docker.io/ckpt/" + strings.ToLower(sanitize(t.Name())) + ":checkpoint"
	if err := e.d.ImportCheckpointImage(ctx, o.archive, image, "counter"); err != nil {
		t.Fatalf("checkpoint image: %v", err)
	}
	if err := e.waitImage(ctx, image); err != nil {
		t.Fatal(err)
	}
	return image
}

func (o *outcome) restoreScenario(ctx context.Context, e *criEnv, p *pod, image string, ids *[]string) {
	id, err := createContainer(ctx, e, p, counterConfig(image, o.kind))
	if err != nil {
		o.restoreCreateErr = err
		return
	}
	*ids = append(*ids, id)
	// The log starts with the checkpointed container's (the archive's
	// container.log); the restored counter's lines come after it.
	log := filepath.Join(p.logDir, counterLog)
	offset := fileSize(log)
	if _, err := e.runtime.StartContainer(ctx, &runtime.StartContainerRequest{ContainerId: id}); err != nil {
		o.restoreStartErr = err
		return
	}
	o.restored, o.restoredErr = waitCounts(log, offset, 5, 0, 30*time.Second)
	if st, err := containerState(ctx, e, id); err == nil {
		o.annotations = st.GetAnnotations()
	}
	o.fileErr = checkCounterFile(ctx, e, id, last(o.restored))
	o.stdout = counterStdout(ctx, e, id)
	o.statsErr = checkStats(ctx, e, id)
	o.recheckpointErr = checkpointAgain(ctx, e, id, log, offset, o.archive+".again")
}

// counterStdout is the link of the counter's fd 1, found as the process
// with counterFile on fd 3 (in a shared pid namespace it is not pid 1).
func counterStdout(ctx context.Context, e *criEnv, id string) string {
	script := `for p in /proc/[0-9]*; do if [ "$(readlink $p/fd/3)" = ` + counterFile + ` ]; then readlink $p/fd/1; fi; done`
	resp, err := e.runtime.ExecSync(ctx, &runtime.ExecSyncRequest{ContainerId: id, Cmd: []string{"sh", "-c", script}, Timeout: 30})
	if err != nil {
		return "ExecSync: " + err.Error()
	}
	return strings.TrimSpace(string(resp.GetStdout()))
}

// stdoutKind is "pty", "pipe" or, for anything else, the link itself.
func stdoutKind(link string) string {
	switch {
	case strings.HasPrefix(link, "/dev/pts/"):
		return "pty"
	case strings.HasPrefix(link, "pipe:"):
		return "pipe"
	}
	return link
}

// checkStats asks for the container's stats as kubelet does.
func checkStats(ctx context.Context, e *criEnv, id string) error {
	resp, err := e.runtime.ContainerStats(ctx, &runtime.ContainerStatsRequest{ContainerId: id})
	if err != nil {
		return fmt.Errorf("ContainerStats: %w", err)
	}
	st := resp.GetStats()
	if st.GetMemory().GetWorkingSetBytes().GetValue() == 0 || st.GetCpu() == nil {
		return fmt.Errorf("ContainerStats has no memory working set or CPU: %v", st)
	}
	return nil
}

// checkpointAgain checkpoints a restored container and checks that it
// goes on counting.
func checkpointAgain(ctx context.Context, e *criEnv, id, log string, offset int64, archive string) error {
	defer os.Remove(archive)
	counts, err := logCounts(log, offset)
	if err != nil {
		return err
	}
	if _, err := e.runtime.CheckpointContainer(ctx, &runtime.CheckpointContainerRequest{ContainerId: id, Location: archive, Timeout: 120}); err != nil {
		return fmt.Errorf("CheckpointContainer: %w", err)
	}
	if _, err := waitCounts(log, offset, 1, last(counts)+10, 30*time.Second); err != nil {
		return fmt.Errorf("after the checkpoint: %w", err)
	}
	return nil
}

// checkCounterFile reads counterFile in the container: the checkpointed
// part came with rootfs-diff.tar, the rest from the restored fd.
func checkCounterFile(ctx context.Context, e *criEnv, id string, atLeast int) error {
	resp, err := e.runtime.ExecSync(ctx, &runtime.ExecSyncRequest{ContainerId: id, Cmd: []string{"cat", counterFile}, Timeout: 30})
	if err != nil {
		return fmt.Errorf("ExecSync cat %s: %w", counterFile, err)
	}
	if resp.GetExitCode() != 0 {
		return fmt.Errorf("cat %s exits %d: %s", counterFile, resp.GetExitCode(), resp.GetStderr())
	}
	lines := strings.Fields(string(resp.GetStdout()))
	for i, l := range lines {
		if l != strconv.Itoa(i+1) {
			return fmt.Errorf("%s: line %d is %q, want %d (around it: %q)", counterFile, i+1, l, i+1, lines[max(0, i-3):min(len(lines), i+3)])
		}
	}
	if len(lines) < atLeast {
		return fmt.Errorf("%s counts to %d only; the restored counter logged %d", counterFile, len(lines), atLeast)
	}
	return nil
}

// readArchive lists a checkpoint archive's entries, with the contents of
// archiveFilesRead.
func readArchive(path string) (map[string][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	entries := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return entries, nil
		}
		if err != nil {
			return nil, err
		}
		name := strings.TrimPrefix(hdr.Name, "./")
		entries[name] = nil
		if archiveFilesRead[name] {
			if entries[name], err = io.ReadAll(io.LimitReader(tr, 1<<20)); err != nil {
				return nil, err
			}
		}
	}
}

// names are the archive's entry names, sorted.
func (o *outcome) names() []string {
	var names []string
	for n := range o.entries {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// leftovers is what is left of the given pods and containers once
// removed: CRI objects, runc state, mounts, shim processes of the handler.
func leftovers(ctx context.Context, e *criEnv, handler string, ids []string) []string {
	var left []string
	deadline := time.Now().Add(15 * time.Second)
	for {
		left = left[:0]
		crid, err := podsLeft(ctx, e)
		if err != nil {
			left = append(left, "list CRI objects: "+err.Error())
		}
		left = append(left, crid...)
		root := runtimeRoot(e, handler)
		for _, id := range ids {
			if _, err := os.Stat(filepath.Join(root, id)); err == nil {
				left = append(left, "runc state "+filepath.Join(root, id))
			}
		}
		left = append(left, mountsOf(ids)...)
		left = append(left, shimsOf(e.d.Address, ids)...)
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// mountsOf lists the mounts whose path names one of ids.
func mountsOf(ids []string) []string {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return []string{"mountinfo: " + err.Error()}
	}
	var left []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		for _, id := range ids {
			if strings.Contains(f[4], id) {
				left = append(left, "mount "+f[4])
			}
		}
	}
	return left
}

// shimsOf lists the shim processes serving the daemon at address for one
// of ids.
func shimsOf(address string, ids []string) []string {
	procs, _ := os.ReadDir("/proc")
	var left []string
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(cmdline), "\x00")
		if !strings.HasPrefix(filepath.Base(args[0]), "containerd-shim-") || !containsPair(args, "-address", address) {
			continue
		}
		for _, id := range ids {
			if containsPair(args, "-id", id) {
				left = append(left, fmt.Sprintf("shim %d (%s) for %s", pid, filepath.Base(args[0]), id))
			}
		}
	}
	return left
}

func containsPair(args []string, k, v string) bool {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == k && args[i+1] == v {
			return true
		}
	}
	return false
}
