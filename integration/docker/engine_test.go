package docker_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ckpt-dev/ckpt/integration/containerd/harness"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/leases"
)

// engine is one Docker version running in its own network namespace:
// a keeper process holds that namespace and a mount namespace with the
// host's cgroups mounted again (`ip netns exec` mounts a fresh /sys);
// containerd and dockerd join both.
type engine struct {
	version string
	bin     string // dockerd, docker, docker-init, docker-proxy
	dir     string // everything on disk lives under it
	netns   string // `ip netns` name
	ns      string // dockerd's containerd namespace
	// cgroupParent holds every container's cgroups.
	cgroupParent string

	keeper, containerd, dockerd *daemon
	ctrd                        *client.Client
}

// daemon is a process the engine started, with its exit.
type daemon struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	log  string
}

func (e *engine) containerdSock() string { return filepath.Join(e.dir, "containerd.sock") }
func (e *engine) dockerSock() string     { return filepath.Join(e.dir, "docker.sock") }
func (e *engine) dataRoot() string       { return filepath.Join(e.dir, "docker") }

// leaveRunningConfig is the checkpoint defaults file of the "ckpt-lr"
// runtime (daemon.json options.ConfigPath).
func (e *engine) leaveRunningConfig() string { return filepath.Join(e.dir, "ckpt-leave-running.json") }

// startEngine starts containerd and dockerd <version> and loads the busybox
// image; everything is removed when the test ends.
func startEngine(t *testing.T, version, bin, shimDir string) *engine {
	t.Helper()
	// Short: dockerd's exec-root and containerd's sockets live under it.
	dir, err := os.MkdirTemp("", "ckd"+version+"-")
	if err != nil {
		t.Fatal(err)
	}
	id := fmt.Sprintf("ckpt-docker%s-%d", version, os.Getpid())
	e := &engine{version: version, bin: bin, dir: dir, netns: id, ns: id, cgroupParent: "/" + id}
	t.Cleanup(func() { e.stop(t) })

	for _, args := range [][]string{{"netns", "add", e.netns}, {"-n", e.netns, "link", "set", "lo", "up"}} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	if err := e.writeConfigs(); err != nil {
		t.Fatal(err)
	}
	if err := e.startKeeper(); err != nil {
		t.Fatal(err)
	}
	path := fmt.Sprintf("%s:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", shimDir)
	if b := os.Getenv(harness.ContainerdBinEnv); b != "" {
		// The containerd under test, with its runc shim (the matrix).
		path = shimDir + ":" + filepath.Dir(b) + path[len(shimDir):]
	}
	e.containerd = e.spawn("containerd", path, "containerd", "--config", filepath.Join(dir, "containerd.toml"))
	if err := e.waitContainerd(); err != nil {
		t.Fatal(err)
	}
	if v, err := e.ctrd.Version(context.Background()); err == nil {
		t.Logf("Docker %s on containerd %s", version, v.Version)
	}
	e.dockerd = e.spawn("dockerd", bin+":"+path, filepath.Join(bin, "dockerd"),
		"--config-file", filepath.Join(dir, "daemon.json"),
		"--data-root", e.dataRoot(),
		"--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "dockerd.pid"),
		"--host", "unix://"+e.dockerSock(),
		"--containerd", e.containerdSock(),
		"--containerd-namespace", e.ns,
		"--containerd-plugins-namespace", e.ns+"-plugins",
		"--cgroup-parent", e.cgroupParent,
	)
	if err := e.waitDocker(); err != nil {
		t.Fatal(err)
	}
	if err := e.loadImage(t); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *engine) writeConfigs() error {
	q := func(s string) string { return "'" + s + "'" }
	disabled := []string{
		"io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime",
		"io.containerd.nri.v1.nri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
		"io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.blockfile",
		"io.containerd.snapshotter.v1.erofs", "io.containerd.differ.v1.erofs", "io.containerd.mount-handler.v1.erofs",
		"io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing",
	}
	for i, p := range disabled {
		disabled[i] = q(p)
	}
	// The garbage collector runs only when the test asks (forceGC): left
	// to itself it removes a deleted checkpoint's blob some milliseconds
	// to seconds later, and whether `docker start --checkpoint` right after
	// `docker checkpoint create` collides with that blob would be luck.
	// A tiny pause threshold makes the scheduled interval minutes long.
	ctrd := fmt.Sprintf(`version = 3
root = %s
state = %s
disabled_plugins = [%s]

[grpc]
  address = %s

[ttrpc]
  address = %s

[debug]
  level = 'debug'

[plugins]
  [plugins.'io.containerd.gc.v1.scheduler']
    pause_threshold = 0.00001
    startup_delay = '10ms'
    schedule_delay = '0s'
  [plugins.'io.containerd.internal.v1.opt']
    path = %s
`, q(filepath.Join(e.dir, "containerd")), q(filepath.Join(e.dir, "containerd-state")), strings.Join(disabled, ", "),
		q(e.containerdSock()), q(e.containerdSock()+".ttrpc"), q(filepath.Join(e.dir, "opt")))
	if err := os.WriteFile(filepath.Join(e.dir, "containerd.toml"), []byte(ctrd), 0o644); err != nil {
		return err
	}
	daemonJSON, err := json.MarshalIndent(map[string]any{
		"experimental": true,
		"runtimes": map[string]any{
			"ckpt": map[string]any{"runtimeType": "io.containerd.ckpt.v2"},
			"ckpt-lr": map[string]any{
				"runtimeType": "io.containerd.ckpt.v2",
				"options":     map[string]any{"ConfigPath": e.leaveRunningConfig()},
			},
		},
	}, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(e.dir, "daemon.json"), daemonJSON, 0o644); err != nil {
		return err
	}
	return os.WriteFile(e.leaveRunningConfig(), []byte(`{"leave_running": true, "file_locks": true}`+"\n"), 0o644)
}

// startKeeper starts the process that holds the namespaces: `ip netns
// exec` gives it the network namespace and a mount namespace with /sys
// mounted again for that network namespace, which hides the host's
// cgroup mounts; they are mounted again from the host's mount table.
func (e *engine) startKeeper() error {
	mounts, err := cgroupMounts()
	if err != nil {
		return err
	}
	// Other cgroup mounts of the host (the cgroup yard of a CRIU restore
	// running meanwhile) are mountpoints runc and ckpt could pick instead
	// of /sys/fs/cgroup/*: they are unmounted, and the namespace is made
	// private so that no more arrive.
	script := "set -e\nmount --make-rprivate /\n" + foreignCgroupUnmounts + mounts + "echo ready\nexec sleep infinity\n"
	e.keeper = &daemon{name: "keeper", log: filepath.Join(e.dir, "keeper.log"), done: make(chan struct{})}
	cmd := exec.Command("ip", "netns", "exec", e.netns, "sh", "-c", script)
	logf, err := os.Create(e.keeper.log)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd.Stderr = logf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start the namespace keeper: %w", err)
	}
	e.keeper.cmd = cmd
	go func() {
		cmd.Wait()
		close(e.keeper.done)
	}()
	ready := make(chan bool, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		ready <- strings.TrimSpace(line) == "ready"
	}()
	select {
	case ok := <-ready:
		if ok {
			return nil
		}
	case <-time.After(30 * time.Second):
	}
	data, _ := os.ReadFile(e.keeper.log)
	return fmt.Errorf("the namespace keeper did not get ready:\n%s", data)
}

// foreignCgroupUnmounts unmounts every cgroup filesystem left in the
// keeper's fresh mount namespace (its /sys was mounted again, so all of
// them are outside /sys/fs/cgroup), deepest first.
const foreignCgroupUnmounts = `awk '/ - cgroup2? / {print $5}' /proc/self/mountinfo | sort -r | while read -r mp; do umount -l "$mp"; done
`

// cgroupMounts is a shell script mounting again, in the host's order, the
// host's cgroup filesystems at /sys/fs/cgroup and below.
func cgroupMounts() (string, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	var b strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		sep := -1
		for i, x := range f {
			if x == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+3 >= len(f) || len(f) < 5 {
			continue
		}
		mp, fstype, source, opts := f[4], f[sep+1], f[sep+2], f[sep+3]
		if mp != "/sys/fs/cgroup" && !strings.HasPrefix(mp, "/sys/fs/cgroup/") {
			continue
		}
		if strings.ContainsAny(mp+fstype+source+opts, "'\\") {
			return "", fmt.Errorf("cgroup mount %s: unexpected characters", mp)
		}
		fmt.Fprintf(&b, "mkdir -p '%s'\nmount -t '%s' -o '%s' '%s' '%s'\n", mp, fstype, opts, source, mp)
	}
	if b.Len() == 0 {
		return "", fmt.Errorf("no cgroup mounts under /sys/fs/cgroup")
	}
	return b.String(), nil
}

// spawn starts name inside the keeper's namespaces, its output in a log.
func (e *engine) spawn(name, path string, argv ...string) *daemon {
	d := &daemon{name: name, log: filepath.Join(e.dir, name+".log"), done: make(chan struct{})}
	args := append([]string{"--target", strconv.Itoa(e.keeper.cmd.Process.Pid), "--mount", "--net", "--"}, argv...)
	cmd := exec.Command("nsenter", args...)
	cmd.Env = append(envWithout(os.Environ(), "PATH", "DOCKER_HOST", "NOTIFY_SOCKET"), "PATH="+path,
		"XDG_RUNTIME_DIR="+filepath.Join(e.dir, "xdg"))
	os.MkdirAll(filepath.Join(e.dir, "xdg"), 0o700)
	f, err := os.Create(d.log)
	if err == nil {
		cmd.Stdout, cmd.Stderr = f, f
		defer f.Close()
	}
	// The daemons must not outlive a killed test binary.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	d.cmd = cmd
	if err := cmd.Start(); err != nil {
		if f != nil {
			fmt.Fprintf(f, "start %s: %v\n", name, err)
		}
		close(d.done)
		return d
	}
	go func() {
		cmd.Wait()
		close(d.done)
	}()
	return d
}

func envWithout(env []string, names ...string) []string {
	var out []string
	for _, kv := range env {
		keep := true
		for _, n := range names {
			if strings.HasPrefix(kv, n+"=") {
				keep = false
			}
		}
		if keep {
			out = append(out, kv)
		}
	}
	return out
}

func (d *daemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

func (d *daemon) tail(n int) string {
	data, _ := os.ReadFile(d.log)
	return lastLines(string(data), n)
}

func (e *engine) waitContainerd() error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		if e.containerd.exited() {
			return fmt.Errorf("containerd exited at start:\n%s", e.containerd.tail(40))
		}
		if _, err := os.Stat(e.containerdSock()); err == nil {
			c, err := client.New(e.containerdSock(), client.WithDefaultNamespace(e.ns), client.WithTimeout(5*time.Second))
			if err == nil {
				if _, err = c.Version(context.Background()); err == nil {
					e.ctrd = c
					return nil
				}
				c.Close()
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("containerd is not serving %s:\n%s", e.containerdSock(), e.containerd.tail(40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (e *engine) waitDocker() error {
	deadline := time.Now().Add(90 * time.Second)
	for {
		if e.dockerd.exited() {
			return fmt.Errorf("dockerd %s exited at start:\n%s", e.version, e.dockerd.tail(40))
		}
		if _, err := e.docker("version", "--format", "{{.Server.Version}}"); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("dockerd %s did not answer on %s:\n%s", e.version, e.dockerSock(), e.dockerd.tail(40))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// forceGC runs containerd's garbage collector now: a lease deleted
// synchronously waits for a collection. It stands for the "few seconds
// later" after which a deleted checkpoint's blob is gone.
func (e *engine) forceGC(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ls := e.ctrd.LeasesService()
	l, err := ls.Create(ctx, leases.WithRandomID(), leases.WithExpiration(time.Minute))
	if err != nil {
		t.Fatalf("create a lease: %v", err)
	}
	if err := ls.Delete(ctx, l, leases.SynchronousDelete); err != nil {
		t.Fatalf("garbage collection: %v", err)
	}
}

// dumpOnFailure logs the daemons' last lines when the test failed.
func (e *engine) dumpOnFailure(t *testing.T) {
	if !t.Failed() {
		return
	}
	t.Logf("dockerd %s log (tail):\n%s", e.version, e.dockerd.tail(30))
	t.Logf("containerd log (tail, shim lines included):\n%s", e.containerd.tail(50))
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
