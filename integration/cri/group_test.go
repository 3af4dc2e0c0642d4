package cri_test

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ckpt-dev/ckpt/integration/containerd/harness"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// counter is a counting container of a pod, made by startCounter.
type counter struct {
	name, id, log string
}

// namedCounter is counterConfig under another name and log file, so that
// a pod can hold several.
func namedCounter(name, image string) *runtime.ContainerConfig {
	cfg := counterConfig(image, kind{})
	cfg.Metadata = &runtime.ContainerMetadata{Name: name}
	cfg.LogPath = name + ".log"
	return cfg
}

// startCounter creates and starts a counter in p and waits for its
// first counts.
func startCounter(t *testing.T, ctx context.Context, e *criEnv, p *pod, name string) *counter {
	t.Helper()
	id, err := createContainer(ctx, e, p, namedCounter(name, harness.ImageName))
	if err != nil {
		t.Fatalf("CreateContainer %s: %v", name, err)
	}
	if _, err := e.runtime.StartContainer(ctx, &runtime.StartContainerRequest{ContainerId: id}); err != nil {
		t.Fatalf("StartContainer %s: %v", name, err)
	}
	c := &counter{name: name, id: id, log: filepath.Join(p.logDir, name+".log")}
	if _, err := waitCounts(c.log, 0, 3, 3, 30*time.Second); err != nil {
		t.Fatalf("%s does not count: %v", name, err)
	}
	return c
}

// countsOn checks that c goes on counting: 10 more counts than it had.
func countsOn(c *counter) error {
	counts, err := logCounts(c.log, 0)
	if err != nil {
		return err
	}
	if _, err := waitCounts(c.log, 0, 1, last(counts)+10, 20*time.Second); err != nil {
		return fmt.Errorf("%s stopped counting: %w", c.name, err)
	}
	return nil
}

// verbosePid is the "pid" of a CRI verbose status's info.
func verbosePid(info map[string]string) (int, error) {
	var v struct {
		Pid int `json:"pid"`
	}
	if err := json.Unmarshal([]byte(info["info"]), &v); err != nil {
		return 0, fmt.Errorf("verbose info: %w", err)
	}
	if v.Pid <= 0 {
		return 0, errors.New("verbose info has no pid")
	}
	return v.Pid, nil
}

func containerPid(ctx context.Context, e *criEnv, id string) (int, error) {
	resp, err := e.runtime.ContainerStatus(ctx, &runtime.ContainerStatusRequest{ContainerId: id, Verbose: true})
	if err != nil {
		return 0, err
	}
	return verbosePid(resp.GetInfo())
}

func sandboxPid(ctx context.Context, e *criEnv, id string) (int, error) {
	resp, err := e.runtime.PodSandboxStatus(ctx, &runtime.PodSandboxStatusRequest{PodSandboxId: id, Verbose: true})
	if err != nil {
		return 0, err
	}
	return verbosePid(resp.GetInfo())
}

// parentOf is a process's parent pid: a container's init is reparented to
// the shim that serves it (a subreaper) once runc or CRIU has exited.
func parentOf(pid int) (int, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "PPid:"); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, fmt.Errorf("/proc/%d/status has no PPid", pid)
}

// podShim checks that one shim process serves the pod and the given
// containers (its -id is the pod's; no shim is named after a container,
// and each init is the shim's child) and returns its pid.
func podShim(ctx context.Context, e *criEnv, p *pod, containerIDs ...string) (int, error) {
	shims := harness.Shims(e.d.Address)
	pid, ok := shims[p.id]
	if !ok {
		return 0, fmt.Errorf("no shim named after pod %s; shims: %v", p.id, shims)
	}
	for _, id := range containerIDs {
		if other, ok := shims[id]; ok {
			return 0, fmt.Errorf("container %s has a shim of its own (pid %d); shims: %v", id, other, shims)
		}
	}
	inits := map[string]int{}
	var err error
	if inits["sandbox"], err = sandboxPid(ctx, e, p.id); err != nil {
		return 0, fmt.Errorf("the sandbox's pid: %w", err)
	}
	for _, id := range containerIDs {
		if inits[id], err = containerPid(ctx, e, id); err != nil {
			return 0, fmt.Errorf("container %s's pid: %w", id, err)
		}
	}
	for what, init := range inits {
		parent, err := parentOf(init)
		if err != nil {
			return 0, err
		}
		if parent != pid {
			return 0, fmt.Errorf("%s's init %d is a child of %d, not of the pod's shim %d", what, init, parent, pid)
		}
	}
	return pid, nil
}

// TestCRIPodOneShim: the pause container and two app containers of a pod
// are served by one shim process, on ckpt's handler as on runc's.
func TestCRIPodOneShim(t *testing.T) {
	e := env(t)
	for _, handler := range []string{harness.CkptHandler, harness.RuncHandler} {
		t.Run(handler, func(t *testing.T) {
			ctx := testContext(t)
			p := runPod(t, e, ctx, handler, "grouped", kind{})
			removed := false
			t.Cleanup(func() {
				if !removed {
					removePod(e, p)
				}
			})
			a := startCounter(t, ctx, e, p, "a")
			b := startCounter(t, ctx, e, p, "b")
			pid, err := podShim(ctx, e, p, a.id, b.id)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("pod %s: one shim, pid %d", p.id, pid)
			removed = true
			if err := removePod(e, p); err != nil {
				t.Fatal(err)
			}
			if left := leftovers(ctx, e, handler, []string{p.id, a.id, b.id}); len(left) > 0 {
				t.Errorf("left after the pod's removal: %v", left)
			}
		})
	}
}

// TestCRIPodContainersIndependent: in a pod served by one ckpt shim, two
// containers checkpoint at the same time; killing one, and a failed
// restore in another pod's shim, leave the other containers counting; a
// restore into a pod whose shim serves a running container works.
func TestCRIPodContainersIndependent(t *testing.T) {
	e := env(t)
	ctx := testContext(t)
	var pods []*pod
	var ids []string
	removed := false
	t.Cleanup(func() {
		if !removed {
			for _, p := range pods {
				removePod(e, p)
			}
		}
	})
	p := runPod(t, e, ctx, harness.CkptHandler, "independent", kind{})
	pods, ids = append(pods, p), append(ids, p.id)
	a := startCounter(t, ctx, e, p, "a")
	b := startCounter(t, ctx, e, p, "b")
	ids = append(ids, a.id, b.id)
	shim, err := podShim(ctx, e, p, a.id, b.id)
	if err != nil {
		t.Fatal(err)
	}

	// 1. Both containers checkpoint at once; both count on.
	dir := filepath.Join(e.d.Dir, "archives", sanitize(t.Name()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	archives := map[string]string{a.id: filepath.Join(dir, "a.tar"), b.id: filepath.Join(dir, "b.tar")}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, c := range []*counter{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = e.runtime.CheckpointContainer(ctx, &runtime.CheckpointContainerRequest{ContainerId: c.id, Location: archives[c.id], Timeout: 120})
		}()
	}
	wg.Wait()
	for i, c := range []*counter{a, b} {
		if errs[i] != nil {
			t.Fatalf("concurrent CheckpointContainer of %s: %v", c.name, errs[i])
		}
		if err := countsOn(c); err != nil {
			t.Fatalf("after the concurrent checkpoints: %v", err)
		}
		entries, err := readArchive(archives[c.id])
		if err != nil {
			t.Fatalf("%s's archive: %v", c.name, err)
		}
		if _, ok := entries["checkpoint/pstree.img"]; !ok {
			t.Fatalf("%s's archive has no checkpoint/pstree.img", c.name)
		}
	}
	beforeB, _ := logCounts(b.log, 0)

	// 2. a is killed (as the OOM killer would): it exits, b counts on, the
	// shim stays. Removing a (containerd's Delete, then Shutdown) leaves
	// the shim to b.
	aPid, err := containerPid(ctx, e, a.id)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(aPid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := waitState(ctx, e, a.id, runtime.ContainerState_CONTAINER_EXITED); err != nil {
		t.Fatalf("a after SIGKILL: %v", err)
	}
	if err := countsOn(b); err != nil {
		t.Fatalf("a killed: %v", err)
	}
	if _, err := e.runtime.RemoveContainer(ctx, &runtime.RemoveContainerRequest{ContainerId: a.id}); err != nil {
		t.Fatalf("RemoveContainer a: %v", err)
	}
	if err := countsOn(b); err != nil {
		t.Fatalf("a removed: %v", err)
	}
	if now, err := podShim(ctx, e, p, b.id); err != nil || now != shim {
		t.Fatalf("after a's removal the pod's shim is %d (%v), was %d", now, err, shim)
	}

	// 3. Another pod, its shim serving a fresh counter c: a restore from
	// a broken archive fails, c counts on; b's archive then restores
	// there, and continues b's count, with c still counting.
	q := runPod(t, e, ctx, harness.CkptHandler, "restores", kind{})
	pods, ids = append(pods, q), append(ids, q.id)
	c := startCounter(t, ctx, e, q, "c")
	ids = append(ids, c.id)
	qShim, err := podShim(ctx, e, q, c.id)
	if err != nil {
		t.Fatal(err)
	}
	broken := filepath.Join(dir, "broken.tar")
	if err := withoutEntries(archives[b.id], broken, "checkpoint/mm-"); err != nil {
		t.Fatal(err)
	}
	bad, err := createContainer(ctx, e, q, namedCounter("broken", broken))
	if err == nil {
		ids = append(ids, bad)
		_, err = e.runtime.StartContainer(ctx, &runtime.StartContainerRequest{ContainerId: bad})
		if err == nil {
			t.Fatal("a restore without the memory layouts started")
		}
		t.Logf("the broken restore failed as it should: %v", err)
		if _, err := e.runtime.RemoveContainer(ctx, &runtime.RemoveContainerRequest{ContainerId: bad}); err != nil {
			t.Fatalf("RemoveContainer of the failed restore: %v", err)
		}
	} else {
		t.Logf("the broken restore failed at CreateContainer: %v", err)
	}
	if err := countsOn(c); err != nil {
		t.Fatalf("after a failed restore in its pod: %v", err)
	}
	if err := countsOn(b); err != nil {
		t.Fatalf("after a failed restore in another pod: %v", err)
	}
	if now, err := podShim(ctx, e, q, c.id); err != nil || now != qShim {
		t.Fatalf("after the failed restore the pod's shim is %d (%v), was %d", now, err, qShim)
	}

	// containerd 2.4 removed the CRI restore (#13871): there the restore
	// into a grouped shim is left to the 2.2 run.
	if restoreViaCreate(e) {
		restored, err := createContainer(ctx, e, q, namedCounter("restored", archives[b.id]))
		if err != nil {
			t.Fatalf("restore: CreateContainer: %v", err)
		}
		ids = append(ids, restored)
		rlog := filepath.Join(q.logDir, "restored.log")
		offset := fileSize(rlog)
		if _, err := e.runtime.StartContainer(ctx, &runtime.StartContainerRequest{ContainerId: restored}); err != nil {
			t.Fatalf("restore: StartContainer: %v", err)
		}
		counts, err := waitCounts(rlog, offset, 5, 0, 30*time.Second)
		if err != nil {
			t.Fatalf("the restored counter: %v", err)
		}
		// b was checkpointed before beforeB's last count and went on: the
		// restore starts after a count b logged, no later than that.
		if first := counts[0]; first < 2 || first > last(beforeB)+1 {
			t.Errorf("the restored counter starts at %d; b's checkpoint was taken at or before %d", first, last(beforeB))
		}
		for i := 1; i < len(counts); i++ {
			if counts[i] != counts[i-1]+1 {
				t.Fatalf("the restored counter skips: %v", counts)
			}
		}
		if now, err := podShim(ctx, e, q, c.id, restored); err != nil || now != qShim {
			t.Fatalf("the restored container is not served by its pod's shim %d: %d, %v", qShim, now, err)
		}
		for _, x := range []*counter{b, c} {
			if err := countsOn(x); err != nil {
				t.Fatalf("after the restore: %v", err)
			}
		}
		t.Logf("restored b's counter in pod %s (shim %d) from %d on: %v", q.id, qShim, counts[0], tailInts(counts, 5))
	} else {
		t.Logf("containerd %s has no CRI restore: the restore into a pod's shim runs on 2.2", e.version)
	}

	removed = true
	for _, p := range pods {
		if err := removePod(e, p); err != nil {
			t.Error(err)
		}
	}
	if left := leftovers(ctx, e, harness.CkptHandler, ids); len(left) > 0 {
		t.Errorf("left after the pods' removal: %v", left)
	}
}

func waitState(ctx context.Context, e *criEnv, id string, want runtime.ContainerState) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		st, err := containerState(ctx, e, id)
		if err == nil && st.GetState() == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("container %s is %v (err %v), want %v", id, st.GetState(), err, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// withoutEntries copies the tar at src to dst without the entries whose
// names start with prefix.
func withoutEntries(src, dst, prefix string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer out.Close()
	tr, tw := tar.NewReader(in), tar.NewWriter(out)
	dropped := 0
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if strings.HasPrefix(strings.TrimPrefix(hdr.Name, "./"), prefix) {
			dropped++
			continue
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return err
		}
	}
	if dropped == 0 {
		return fmt.Errorf("%s has no entry %s*", src, prefix)
	}
	return tw.Close()
}
