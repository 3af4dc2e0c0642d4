package ctrd

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// WithOwnHost runs containerd, hence its shims, runc and criu, like a
// host of its own on this machine: its own mount namespace (private
// propagation) with fresh tmpfs on the paths ckpt keeps per-host state in
// (/run/containerd/ckpt, the shim's runc root; /run/ckpt, its restore
// records), and its own cgroup namespace rooted at a per-host cgroup
// ckpt-<name>-<pid> at the root of every hierarchy, mounted again on
// /sys/fs/cgroup inside. Two daemons with their own hosts can then hold
// the same container id in the same containerd namespace at the same
// time (a post-copy move's frozen source and its restored target): a
// spec's absolute cgroupsPath (/<namespace>/<id>) lands under each one's
// per-host cgroup, and a frozen source does not freeze the target. It
// composes with WithNetNS. name must be unique among running daemons.
func WithOwnHost(name string) Option {
	return func(s *settings) { s.host = name }
}

// Mountinfo is the mount table as containerd sees it: with WithOwnHost,
// the mounts of its shims and containers are in its mount namespace only,
// not in the caller's /proc/self/mountinfo.
func (d *Daemon) Mountinfo() ([]byte, error) {
	return os.ReadFile(filepath.Join("/proc", strconv.Itoa(d.Pid()), "mountinfo"))
}

// Path is p, a path on the daemon's host, as the caller reaches it: with
// WithOwnHost through its namespace keeper's root (e.g. the fresh
// /run/ckpt), else p itself.
func (d *Daemon) Path(p string) string {
	if d.set.ownHost == nil {
		return p
	}
	return d.set.ownHost.path(p)
}

// ownHost is the namespaces and cgroups of a WithOwnHost daemon. A keeper
// process holds the namespaces, so that containerd can be restarted into
// them (the shims, which stay, live there) and the test can look at the
// host's mounts and files through /proc/<keeper>/root while containerd is
// down.
type ownHost struct {
	cgroup string        // the per-host cgroup, relative to each hierarchy's root
	mounts []cgMount     // the caller's cgroup hierarchies
	keeper *exec.Cmd     // sleeps in the namespaces
	done   chan struct{} // closed when the keeper exits
	log    *os.File      // the keeper's stderr
}

// hostLeaf is containerd's (and the keeper's) cgroup inside the per-host
// one: cgroup v2 allows no processes in a cgroup whose subtree_control
// gives controllers to its children (the containers' cgroups).
const hostLeaf = "daemon"

// hostStateDirs are the paths that get a fresh tmpfs in a host's mount
// namespace: ckpt's shim's runc root and its restore records.
var hostStateDirs = []string{"/run/containerd/ckpt", "/run/ckpt"}

// startOwnHost makes the per-host cgroup in every hierarchy and starts
// the keeper in new mount and cgroup namespaces (and netns, if given),
// scripts in dir.
func startOwnHost(name, netns, dir string) (_ *ownHost, retErr error) {
	if strings.ContainsAny(name, "/'\\ \n") || name == "" {
		return nil, fmt.Errorf("host name %q: want a plain name", name)
	}
	mounts, err := cgroupHierarchies()
	if err != nil {
		return nil, err
	}
	h := &ownHost{cgroup: fmt.Sprintf("ckpt-%s-%d", name, os.Getpid()), mounts: mounts}
	defer func() {
		if retErr != nil {
			h.close()
		}
	}()
	for _, m := range h.cgroupMounts() {
		if err := makeCgroup(m, h.cgroup); err != nil {
			return nil, err
		}
		if err := makeCgroup(m, filepath.Join(h.cgroup, hostLeaf)); err != nil {
			return nil, err
		}
	}
	outside, inside := filepath.Join(dir, "host-enter.sh"), filepath.Join(dir, "host-inside.sh")
	if err := os.WriteFile(outside, []byte(h.enterScript(inside)), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(inside, []byte(h.insideScript()), 0o644); err != nil {
		return nil, err
	}
	argv := []string{"sh", outside}
	if netns != "" {
		argv = append([]string{"nsenter", "--net=" + netns, "--"}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	// What the scripts say (a controller the kernel refused) is kept for
	// the reader, in the daemon's dir.
	if h.log, err = os.Create(filepath.Join(dir, "host.log")); err != nil {
		return nil, err
	}
	cmd.Stderr = h.log
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	// The namespaces must not outlive a killed test binary either.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the host's keeper: %w", err)
	}
	h.keeper, h.done = cmd, make(chan struct{})
	ready := make(chan bool, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		ready <- strings.TrimSpace(line) == "ready"
		cmd.Wait()
		close(h.done)
	}()
	select {
	case ok := <-ready:
		if ok {
			return h, nil
		}
	case <-time.After(30 * time.Second):
	}
	out, _ := os.ReadFile(h.log.Name())
	return nil, fmt.Errorf("host %s did not get ready: %s", name, out)
}

// enterScript puts the keeper into the per-host cgroups, then into new
// mount and cgroup namespaces: a cgroup namespace is rooted at the cgroups
// its creator is in. unshare execs, so the keeper keeps its pid (and the
// Pdeathsig Go gave it).
func (h *ownHost) enterScript(inside string) string {
	var b strings.Builder
	b.WriteString("set -e\n")
	for _, m := range h.cgroupMounts() {
		fmt.Fprintf(&b, "echo $$ > '%s'\n", filepath.Join(m.point, h.cgroup, "cgroup.procs"))
	}
	fmt.Fprintf(&b, "exec unshare --mount --cgroup --propagation private sh '%s'\n", inside)
	return b.String()
}

// insideScript runs in the host's namespaces: fresh state dirs, the
// cgroup hierarchies mounted again (now showing the per-host cgroup as
// their root), the keeper moved to the leaf and, on cgroup v2, the
// controllers the per-host cgroup has given to its children.
func (h *ownHost) insideScript() string {
	var b strings.Builder
	b.WriteString("set -e\n")
	for _, d := range hostStateDirs {
		fmt.Fprintf(&b, "mkdir -p '%s'\nmount -t tmpfs -o mode=0711 ckpt-host '%s'\n", d, d)
	}
	for _, m := range h.mounts {
		fmt.Fprintf(&b, "mkdir -p '%s'\nmount -t '%s' -o '%s' '%s' '%s'\n", m.point, m.fstype, m.opts, m.source, m.point)
	}
	for _, m := range h.cgroupMounts() {
		fmt.Fprintf(&b, "echo $$ > '%s'\n", filepath.Join(m.point, hostLeaf, "cgroup.procs"))
	}
	for _, m := range h.cgroupMounts() {
		if m.fstype != "cgroup2" {
			continue
		}
		// Whatever the parent gives the per-host cgroup; a controller the
		// kernel refuses is logged and left out.
		fmt.Fprintf(&b, "for c in $(cat '%[1]s/cgroup.controllers'); do echo +$c > '%[1]s/cgroup.subtree_control' || echo \"controller $c not enabled\" >&2; done\n", m.point)
	}
	b.WriteString("echo ready\nexec sleep infinity\n")
	return b.String()
}

// command is argv run in the host's namespaces, put in the leaf cgroup
// first: from outside, since with nsdelegate a process inside a cgroup
// namespace cannot move in from outside its root. nsenter execs.
func (h *ownHost) command(argv ...string) *exec.Cmd {
	var b strings.Builder
	for _, m := range h.cgroupMounts() {
		fmt.Fprintf(&b, "echo $$ > '%s' && ", filepath.Join(m.point, h.cgroup, hostLeaf, "cgroup.procs"))
	}
	b.WriteString(`exec nsenter --target "$0" --mount --cgroup --net -- "$@"`)
	args := append([]string{"-c", b.String(), strconv.Itoa(h.keeper.Process.Pid)}, argv...)
	return exec.Command("sh", args...)
}

// path is p as the host sees it, through the keeper's root.
func (h *ownHost) path(p string) string {
	return filepath.Join("/proc", strconv.Itoa(h.keeper.Process.Pid), "root", p)
}

// close ends the keeper, kills what is left in the per-host cgroups (only
// this daemon's processes can be there) and removes them, deepest first.
func (h *ownHost) close() error {
	if h.keeper != nil && h.keeper.Process != nil {
		h.keeper.Process.Kill()
		select {
		case <-h.done:
		case <-time.After(10 * time.Second):
		}
	}
	if h.log != nil {
		h.log.Close()
	}
	var errs []error
	for _, m := range h.cgroupMounts() {
		if err := removeCgroupTree(filepath.Join(m.point, h.cgroup)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// removeCgroupTree kills the processes under root and removes its
// cgroups once they are empty (a killed process leaves its cgroup a
// moment after it dies).
func removeCgroupTree(root string) error {
	if !isDir(root) {
		return nil
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		var dirs []string
		filepath.WalkDir(root, func(p string, e os.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
		var last error
		for _, d := range dirs {
			for _, pid := range cgroupProcs(d) {
				syscall.Kill(pid, syscall.SIGKILL)
			}
			// A frozen cgroup (a paused task) keeps its killed processes.
			os.WriteFile(filepath.Join(d, "freezer.state"), []byte("THAWED"), 0o644)
			os.WriteFile(filepath.Join(d, "cgroup.freeze"), []byte("0"), 0o644)
			if err := syscall.Rmdir(d); err != nil && !errors.Is(err, syscall.ENOENT) {
				last = fmt.Errorf("remove cgroup %s: %w", d, err)
			}
		}
		if last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return last
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func cgroupProcs(dir string) []int {
	data, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	var pids []int
	for _, f := range strings.Fields(string(data)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// makeCgroup makes rel in hierarchy m. A v1 cpuset cgroup takes no
// process until it has cpus and mems: it gets its parent's.
func makeCgroup(m cgMount, rel string) error {
	dir := filepath.Join(m.point, rel)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return fmt.Errorf("cgroup %s: %w", dir, err)
	}
	if m.fstype == "cgroup" && isFile(filepath.Join(dir, "cpuset.cpus")) {
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			v, err := os.ReadFile(filepath.Join(filepath.Dir(dir), f))
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(dir, f), v, 0o644); err != nil {
				return fmt.Errorf("%s of %s: %w", f, dir, err)
			}
		}
	}
	return nil
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// cgMount is a mount at or under /sys/fs/cgroup: a cgroup hierarchy, or
// the tmpfs that holds v1 hierarchies.
type cgMount struct{ point, fstype, source, opts string }

// cgroupMounts are the cgroup hierarchies among h.mounts.
func (h *ownHost) cgroupMounts() []cgMount {
	var out []cgMount
	for _, m := range h.mounts {
		if m.fstype == "cgroup" || m.fstype == "cgroup2" {
			out = append(out, m)
		}
	}
	return out
}

// cgroupHierarchies lists the caller's mounts at and under /sys/fs/cgroup,
// in mount order (a tmpfs before the hierarchies on it).
func cgroupHierarchies() ([]cgMount, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []cgMount
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
		if sep < 5 || sep+3 >= len(f) {
			continue
		}
		m := cgMount{point: unescape(f[4]), fstype: f[sep+1], source: f[sep+2], opts: f[sep+3]}
		if m.point != "/sys/fs/cgroup" && !strings.HasPrefix(m.point, "/sys/fs/cgroup/") {
			continue
		}
		if strings.ContainsAny(m.point+m.fstype+m.source+m.opts, "'\\") {
			return nil, fmt.Errorf("cgroup mount %s: unexpected characters", m.point)
		}
		out = append(out, m)
	}
	if len(out) == 0 {
		return nil, errors.New("no cgroup mounts under /sys/fs/cgroup")
	}
	return out, nil
}
