package ctrd

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Sandbox is a network namespace of the test's own (`ip netns`) and a
// private mount namespace, held by a keeper process: a containerd started
// WithSandbox, its shims, CNI plugins and iptables rules all live there,
// never on the host's network. `ip netns exec` mounts a fresh /sys, so
// the keeper mounts the host's cgroup hierarchies again; Binds are bind
// mounts made in the private mount namespace only (e.g. a CNI state dir
// over /var/lib/cni).
type Sandbox struct {
	Name   string // `ip netns` name
	keeper *exec.Cmd
	done   chan struct{}
	log    bytes.Buffer
}

// Bind is a bind mount of the sandbox's mount namespace.
type Bind struct{ Source, Target string }

// NewSandbox creates netns name (lo up) and its keeper.
func NewSandbox(name string, binds ...Bind) (_ *Sandbox, retErr error) {
	s := &Sandbox{Name: name}
	for _, args := range [][]string{{"netns", "add", name}, {"-n", name, "link", "set", "lo", "up"}} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			s.Close()
			return nil, fmt.Errorf("ip %s: %w\n%s", strings.Join(args, " "), err, out)
		}
	}
	defer func() {
		if retErr != nil {
			s.Close()
		}
	}()
	mounts, err := cgroupMounts()
	if err != nil {
		return nil, err
	}
	var bm strings.Builder
	for _, b := range binds {
		if strings.ContainsAny(b.Source+b.Target, "'\\") {
			return nil, fmt.Errorf("bind %s: unexpected characters", b.Source)
		}
		fmt.Fprintf(&bm, "mkdir -p '%s' '%s'\nmount --bind '%s' '%s'\n", b.Source, b.Target, b.Source, b.Target)
	}
	// Cgroup mounts the host had elsewhere (a CRIU restore's cgroup yard)
	// are gone with the fresh /sys; the namespace is made private so that
	// none arrive.
	script := "set -e\nmount --make-rprivate /\n" +
		`awk '/ - cgroup2? / {print $5}' /proc/self/mountinfo | sort -r | while read -r mp; do umount -l "$mp"; done` + "\n" +
		mounts + bm.String() + "echo ready\nexec sleep infinity\n"
	cmd := exec.Command("ip", "netns", "exec", name, "sh", "-c", script)
	cmd.Stderr = &s.log
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the namespace keeper: %w", err)
	}
	s.keeper, s.done = cmd, make(chan struct{})
	ready := make(chan bool, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		ready <- strings.TrimSpace(line) == "ready"
		cmd.Wait()
		close(s.done)
	}()
	select {
	case ok := <-ready:
		if ok {
			return s, nil
		}
	case <-time.After(30 * time.Second):
	}
	return nil, fmt.Errorf("the namespace keeper of %s did not get ready: %s", name, s.log.String())
}

// Command runs argv in the sandbox's network and mount namespaces.
func (s *Sandbox) Command(argv ...string) *exec.Cmd {
	return s.CommandContext(context.Background(), argv...)
}

// CommandContext is Command, killed when ctx is done.
func (s *Sandbox) CommandContext(ctx context.Context, argv ...string) *exec.Cmd {
	args := append([]string{"--target", strconv.Itoa(s.keeper.Process.Pid), "--mount", "--net", "--"}, argv...)
	return exec.CommandContext(ctx, "nsenter", args...)
}

// Close ends the keeper and deletes the netns. Processes still in the
// namespaces keep them alive; the sandbox's users end theirs first.
func (s *Sandbox) Close() error {
	if s.keeper != nil && s.keeper.Process != nil {
		s.keeper.Process.Kill()
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
		}
	}
	if out, err := exec.Command("ip", "netns", "delete", s.Name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns delete %s: %w\n%s", s.Name, err, out)
	}
	return nil
}

// cgroupMounts is a script that mounts the host's cgroup hierarchies as
// they are mounted under /sys/fs/cgroup.
func cgroupMounts() (string, error) {
	mounts, err := cgroupHierarchies()
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, m := range mounts {
		fmt.Fprintf(&b, "mkdir -p '%s'\nmount -t '%s' -o '%s' '%s' '%s'\n", m.point, m.fstype, m.opts, m.source, m.point)
	}
	return b.String(), nil
}
