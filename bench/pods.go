package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ckpt-dev/ckpt/integration/containerd/harness"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The pods mode (-pods N) measures what idle Kubernetes pods cost in
// shims: N pods of a pause container and two idle app containers on
// ckpt's CRI handler and N on containerd's runc shim, side by side under
// one private containerd with its CRI plugin, then the proportional set
// size (PSS) of every shim. PSS, not RSS: the shims of one runtime map the
// same binary, whose pages RSS counts once per shim, and PSS divides
// among them.

// podsAppContainers is the number of app containers per pod, besides the
// pause container.
const podsAppContainers = 2

// podsSettle are the times, after the last pod started, at which the
// shims are measured: soon after start-up, and once Go's periodic
// garbage collection (every 2 minutes in an idle process) and the
// scavenger have had their turn, which is what a long-idle pod costs.
var podsSettle = "20s,150s"

func settleTimes(list string) ([]time.Duration, error) {
	var out []time.Duration
	for _, f := range strings.Split(list, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("-pods-settle: %w", err)
		}
		if len(out) > 0 && d < out[len(out)-1] {
			return nil, fmt.Errorf("-pods-settle: %s comes before %s", d, out[len(out)-1])
		}
		out = append(out, d)
	}
	return out, nil
}

// pssOf is a process's memory from /proc/PID/smaps_rollup, in bytes.
type pssOf struct {
	Rss, Pss, PssAnon, PssFile int64
}

func readPSS(pid int) (pssOf, error) {
	var m pssOf
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return m, err
	}
	defer f.Close()
	fields := map[string]*int64{"Rss": &m.Rss, "Pss": &m.Pss, "Pss_Anon": &m.PssAnon, "Pss_File": &m.PssFile}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if p := fields[k]; ok && p != nil {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return m, fmt.Errorf("smaps_rollup of %d: %s: %w", pid, k, err)
			}
			*p = kb << 10
		}
	}
	return m, sc.Err()
}

// podsResult is one handler's shims at one time.
type podsResult struct {
	After      string `json:"after"`
	Handler    string `json:"handler"`
	Pods       int    `json:"pods"`
	Containers int    `json:"containers"`
	Shims      int    `json:"shims"`
	// Others are the processes outside this daemon that run the same
	// shim binary: they share its pages, and lower the PSS measured here.
	Others  int     `json:"others"`
	Total   pssOf   `json:"total"`
	PerShim []pssOf `json:"per_shim"`
}

// runPods runs the pods mode and writes pods.md and pods.json into out.
func runPods(n int, out string) error {
	settle, err := settleTimes(podsSettle)
	if err != nil {
		return err
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, unix.SIGTERM)
	defer cancel()
	scratch, cleanup, err := tmpfs()
	if err != nil {
		return err
	}
	defer cleanup()
	memhog, err := buildMemhog(scratch)
	if err != nil {
		return err
	}
	rootfs := filepath.Join(scratch, "rootfs")
	if err := buildRootfs(rootfs, memhog); err != nil {
		return err
	}
	sctx, scancel := context.WithTimeout(ctx, 3*time.Minute)
	d, err := harness.Start(sctx, rootfs, harness.WithCRI())
	scancel()
	if err != nil {
		return fmt.Errorf("private containerd with CRI: %w", err)
	}
	defer func() {
		if err := d.Stop(); err != nil {
			logrus.WithError(err).Warn("stop the private containerd")
		}
	}()
	conn, err := grpc.NewClient("unix://"+d.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	rt, images := cri.NewRuntimeServiceClient(conn), cri.NewImageServiceClient(conn)
	for _, img := range []string{harness.PauseImageName, harness.ImageName} {
		if err := waitCRIImage(ctx, images, img); err != nil {
			return err
		}
	}
	// As in the other targets, both shims start from disk (see
	// extraTargets).
	for _, p := range shimBinaries(d) {
		if err := dropPageCache(p); err != nil {
			logrus.WithError(err).Warn("shim binaries are not on equal footing")
		}
	}

	var pods []string
	defer func() {
		rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer rcancel()
		for _, id := range pods {
			if _, err := rt.StopPodSandbox(rctx, &cri.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
				logrus.WithError(err).Warn("stop pod")
			}
			if _, err := rt.RemovePodSandbox(rctx, &cri.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
				logrus.WithError(err).Warn("remove pod")
			}
		}
	}()
	handlers := []string{harness.CkptHandler, harness.RuncHandler}
	for i := range n {
		// Interleaved, so that neither runtime's shims all start first.
		for _, h := range handlers {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			id, err := idlePod(ctx, rt, d, scratch, h, i)
			if id != "" {
				pods = append(pods, id)
			}
			if err != nil {
				return fmt.Errorf("pod %d on %s: %w", i, h, err)
			}
		}
	}
	logrus.WithFields(logrus.Fields{"pods": len(pods), "settle": podsSettle}).Info("pods run; letting them idle")
	started := time.Now()
	var results []podsResult
	for _, after := range settle {
		select {
		case <-time.After(time.Until(started.Add(after))):
		case <-ctx.Done():
			return ctx.Err()
		}
		r, err := measurePods(d, n, after)
		if err != nil {
			return err
		}
		results = append(results, r...)
	}
	md := podsMarkdown(results, n, environment(pageReportingState()))
	fmt.Println(md)
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	data, err := json.MarshalIndent(results, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, "pods.json"), data, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(out, "pods.md"), []byte(md), 0o644)
}

func shimBinaries(d *harness.Daemon) []string {
	bins := []string{filepath.Join(d.Dir, "bin", "containerd-shim-ckpt-v2")}
	if p, err := exec.LookPath("containerd-shim-runc-v2"); err == nil {
		bins = append(bins, p)
	}
	return bins
}

func waitCRIImage(ctx context.Context, images cri.ImageServiceClient, name string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := images.ImageStatus(ctx, &cri.ImageStatusRequest{Image: &cri.ImageSpec{Image: name}})
		if err == nil && st.GetImage() != nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the CRI plugin does not see image %s (err %v)", name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// idlePod runs a host-network pod with podsAppContainers sleeping
// containers on handler and returns its id.
func idlePod(ctx context.Context, rt cri.RuntimeServiceClient, d *harness.Daemon, scratch, handler string, i int) (string, error) {
	logDir := filepath.Join(scratch, "pod-logs", fmt.Sprintf("%s-%d", handler, i))
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return "", err
	}
	ns := &cri.NamespaceOption{Network: cri.NamespaceMode_NODE, Pid: cri.NamespaceMode_CONTAINER, Ipc: cri.NamespaceMode_POD}
	cfg := &cri.PodSandboxConfig{
		Metadata:     &cri.PodSandboxMetadata{Name: fmt.Sprintf("idle-%s-%d", handler, i), Namespace: "bench", Uid: fmt.Sprintf("bench-%d-%s-%d", os.Getpid(), handler, i)},
		LogDirectory: logDir,
		Linux: &cri.LinuxPodSandboxConfig{
			CgroupParent:    d.CgroupParent,
			SecurityContext: &cri.LinuxSandboxSecurityContext{NamespaceOptions: &cri.NamespaceOption{Network: cri.NamespaceMode_NODE, Pid: cri.NamespaceMode_POD, Ipc: cri.NamespaceMode_POD}},
		},
	}
	resp, err := rt.RunPodSandbox(ctx, &cri.RunPodSandboxRequest{Config: cfg, RuntimeHandler: handler})
	if err != nil {
		return "", fmt.Errorf("RunPodSandbox: %w", err)
	}
	pod := resp.GetPodSandboxId()
	for c := range podsAppContainers {
		name := fmt.Sprintf("app%d", c)
		cc, err := rt.CreateContainer(ctx, &cri.CreateContainerRequest{PodSandboxId: pod, SandboxConfig: cfg, Config: &cri.ContainerConfig{
			Metadata: &cri.ContainerMetadata{Name: name},
			Image:    &cri.ImageSpec{Image: harness.ImageName},
			Command:  []string{"sleep", "1000000"},
			LogPath:  name + ".log",
			Linux:    &cri.LinuxContainerConfig{SecurityContext: &cri.LinuxContainerSecurityContext{NamespaceOptions: ns}},
		}})
		if err != nil {
			return pod, fmt.Errorf("CreateContainer %s: %w", name, err)
		}
		if _, err := rt.StartContainer(ctx, &cri.StartContainerRequest{ContainerId: cc.GetContainerId()}); err != nil {
			return pod, fmt.Errorf("StartContainer %s: %w", name, err)
		}
	}
	return pod, nil
}

// measurePods reads the PSS of every shim of the daemon, by runtime.
func measurePods(d *harness.Daemon, n int, after time.Duration) ([]podsResult, error) {
	byBinary := map[string]*podsResult{
		"containerd-shim-ckpt-v2": {Handler: harness.CkptHandler, After: after.String()},
		"containerd-shim-runc-v2": {Handler: harness.RuncHandler, After: after.String()},
	}
	for _, pid := range harness.Shims(d.Address) {
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil {
			return nil, err
		}
		r := byBinary[filepath.Base(exe)]
		if r == nil {
			continue
		}
		m, err := readPSS(pid)
		if err != nil {
			return nil, err
		}
		r.Shims++
		r.PerShim = append(r.PerShim, m)
		r.Total.Rss += m.Rss
		r.Total.Pss += m.Pss
		r.Total.PssAnon += m.PssAnon
		r.Total.PssFile += m.PssFile
	}
	ours := map[int]bool{}
	for _, pid := range harness.Shims(d.Address) {
		ours[pid] = true
	}
	for _, bin := range shimBinaries(d) {
		if r := byBinary[filepath.Base(bin)]; r != nil {
			r.Others = othersRunning(bin, ours)
		}
	}
	var out []podsResult
	for _, b := range []string{"containerd-shim-ckpt-v2", "containerd-shim-runc-v2"} {
		r := byBinary[b]
		r.Pods, r.Containers = n, n*(1+podsAppContainers)
		out = append(out, *r)
	}
	return out, nil
}

// othersRunning counts the processes not in ours whose executable is bin.
func othersRunning(bin string, ours map[int]bool) int {
	entries, _ := os.ReadDir("/proc")
	n := 0
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || ours[pid] {
			continue
		}
		if exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe")); err == nil && exe == bin {
			n++
		}
	}
	return n
}

func podsMarkdown(results []podsResult, n int, env string) string {
	mib := func(b int64) string { return fmt.Sprintf("%.1f", float64(b)/(1<<20)) }
	var b strings.Builder
	fmt.Fprintf(&b, "## Shim memory of %d idle pods per handler (pause + %d app containers each)\n\n", n, podsAppContainers)
	fmt.Fprintf(&b, "%s\n\n", env)
	b.WriteString("| idle for | handler | pods | containers | shims | total PSS MiB | PSS anon | PSS file | per pod | per container | total RSS MiB | other shims of the binary |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range results {
		perPod, perCtr := int64(0), int64(0)
		if r.Pods > 0 {
			perPod, perCtr = r.Total.Pss/int64(r.Pods), r.Total.Pss/int64(r.Containers)
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %d | %d | %s | %s | %s | %s | %s | %s | %d |\n", r.After, r.Handler, r.Pods, r.Containers, r.Shims,
			mib(r.Total.Pss), mib(r.Total.PssAnon), mib(r.Total.PssFile), mib(perPod), mib(perCtr), mib(r.Total.Rss), r.Others)
	}
	return b.String()
}
