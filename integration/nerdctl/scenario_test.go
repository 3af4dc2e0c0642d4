package nerdctl_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ckpt-dev/ckpt/integration/containerd/harness"
)

// counterScript counts, one line a tenth of a second: the count and
// whether the container's network namespace has an eth0 (from
// /proc/net/dev, which is the reader's namespace's). busybox httpd serves
// the count on port 8080 from the same tree (it daemonizes; the shell,
// pid 1, reaps it), so the count is read over the container's address.
const counterScript = `mkdir -p /www; httpd -p 8080 -h /www; i=0
while :; do i=$((i+1)); e=$(grep -c 'eth0:' /proc/net/dev); echo "$i $e"; echo $i >/www/c.tmp; mv /www/c.tmp /www/count; sleep 0.1; done`

// scenario is one checkpoint and restore through nerdctl.
type scenario struct {
	name string
	// net is nerdctl's --net: "" for the default bridge network.
	net string
	// ip is nerdctl's --ip. Without it the restored container gets a new
	// address: nerdctl's poststop hook released the old one, and
	// host-local hands out the next (the same on runc's shim).
	ip string
	// leaveRunning passes `checkpoint create --leave-running`;
	// annotateLeaveRunning runs the container with ckpt's annotation,
	// which is what a non-runc runtime gets instead (nerdctl sends it no
	// checkpoint options).
	leaveRunning, annotateLeaveRunning bool
}

var scenarios = []scenario{
	{name: "bridge", ip: "10.4.0.50"},
	{name: "bridge-new-address"},
	{name: "net-none", net: "none"},
	{name: "bridge-leave-running", ip: "10.4.0.51", leaveRunning: true, annotateLeaveRunning: true},
	{name: "leave-running-flag-only", ip: "10.4.0.52", leaveRunning: true},
}

// outcome is what the commands did; the steps before the checkpoint fail
// the test on any runtime.
type outcome struct {
	ip string // the container's address on the bridge ("" with --net none)

	checkpointErr error
	// runningAfter: the container was running once the checkpoint had
	// been taken.
	runningAfter bool
	// before is the last count logged before the checkpoint; after, the
	// last one logged once checkpoint create returned.
	before, after int
	// networkReleased: once stopped, no veth was left in the sandbox and
	// the address did not answer (the poststop hook ran).
	networkReleased error

	startErr error
	restored []line // the restored counter's first lines
	// restoredErr says why there are too few.
	restoredErr error
	sameIP      error // the address after the restore, and its answer
	execErr     error
	stopErr     error
	rmErr       error
	leftovers   []string
}

// line is one line of the counter's log.
type line struct{ n, eth0 int }

var lineRE = regexp.MustCompile(`^(\d+) (\d+)$`)

// run runs sc on runtime rt.
func run(t *testing.T, e *env, ctx context.Context, rt string, sc scenario) *outcome {
	o := &outcome{}
	name := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	name = name[strings.LastIndex(name, "nerdctl")+len("nerdctl"):]
	name = "c" + strings.Trim(name, "-")
	cp := "cp-" + name
	args := []string{"run", "-d", "--name", name, "--runtime", rt}
	if sc.net != "" {
		args = append(args, "--net", sc.net)
	}
	if sc.ip != "" {
		args = append(args, "--ip", sc.ip)
	}
	if sc.annotateLeaveRunning {
		args = append(args, "--annotation", "io.ckpt.checkpoint.leave-running=true")
	}
	args = append(args, harness.ImageName, "sh", "-c", counterScript)
	t.Cleanup(func() {
		e.nerdctl(context.Background(), "rm", "-f", name)
	})
	if _, err := e.nerdctl(ctx, args...); err != nil {
		t.Fatal(err)
	}
	id, err := e.nerdctl(ctx, "inspect", "-f", "{{.ID}}", name)
	if err != nil {
		t.Fatal(err)
	}
	id = strings.TrimSpace(id)
	lines, err := waitLines(ctx, e, name, 0, 5, 0)
	if err != nil {
		t.Fatalf("the counter: %v", err)
	}
	if sc.net == "" {
		if lines[len(lines)-1].eth0 != 1 {
			t.Fatalf("the container on the bridge has no eth0: %v", lines)
		}
		out, err := e.nerdctl(ctx, "inspect", "-f", "{{.NetworkSettings.IPAddress}}", name)
		if err != nil {
			t.Fatal(err)
		}
		o.ip = strings.TrimSpace(out)
		if _, err := fetchCount(ctx, e, o.ip); err != nil {
			t.Fatalf("the container's address %s: %v", o.ip, err)
		}
	}

	// Checkpoint.
	o.before = lines[len(lines)-1].n
	cargs := []string{"checkpoint", "create"}
	if sc.leaveRunning {
		cargs = append(cargs, "--leave-running")
	}
	if _, o.checkpointErr = e.nerdctl(ctx, append(cargs, name, cp)...); o.checkpointErr != nil {
		return o
	}
	// The dump was taken before checkpoint create returned: no count
	// logged by now can come after it.
	if all, _ := logLines(ctx, e, name); len(all) > 0 {
		o.after = all[len(all)-1].n
	}
	o.runningAfter = status(ctx, e, name) == "running"
	if o.runningAfter {
		if _, err = waitLines(ctx, e, name, 0, 1, o.after+10); err != nil {
			o.checkpointErr = fmt.Errorf("running after the checkpoint, but not counting: %w", err)
			return o
		}
		if _, err := e.nerdctl(ctx, "stop", "-t", "1", name); err != nil {
			o.checkpointErr = err
			return o
		}
	}
	all, _ := logLines(ctx, e, name)
	if sc.net == "" {
		o.networkReleased = released(ctx, e, o.ip)
	}

	// Restore.
	offset := len(all)
	if _, o.startErr = e.nerdctl(ctx, "start", "--checkpoint", cp, name); o.startErr != nil {
		return o
	}
	o.restored, o.restoredErr = waitLines(ctx, e, name, offset, 5, 0)
	if sc.net == "" {
		o.sameIP = sameIP(ctx, e, name, o.ip, sc.ip != "")
	}
	_, o.execErr = e.nerdctl(ctx, "exec", name, "cat", "/www/count")
	if _, o.stopErr = e.nerdctl(ctx, "stop", "-t", "1", name); o.stopErr == nil {
		if st := status(ctx, e, name); st != "exited" {
			o.stopErr = fmt.Errorf("after stop the container is %q", st)
		}
	}
	_, o.rmErr = e.nerdctl(ctx, "rm", name)
	o.leftovers = leftovers(ctx, e, name, id)
	return o
}

// continues checks that the restored counter went on from the checkpoint:
// past the last count logged before it, no later than the container had
// reached, one by one.
func (o *outcome) continues() error {
	if o.restoredErr != nil {
		return o.restoredErr
	}
	first := o.restored[0].n
	if first <= o.before || first > o.after+1 {
		return fmt.Errorf("the restored counter starts at %d; the checkpoint was taken between %d and %d (restored: %v)", first, o.before, o.after, o.restored)
	}
	for i := 1; i < len(o.restored); i++ {
		if o.restored[i].n != o.restored[i-1].n+1 {
			return fmt.Errorf("the restored counter does not count on one by one: %v", o.restored)
		}
	}
	return nil
}

// status is the container's state as nerdctl reports it.
func status(ctx context.Context, e *env, name string) string {
	out, err := e.nerdctl(ctx, "inspect", "-f", "{{.State.Status}}", name)
	if err != nil {
		return "inspect: " + err.Error()
	}
	return strings.TrimSpace(out)
}

// logLines are the counter's lines in `nerdctl logs`.
func logLines(ctx context.Context, e *env, name string) ([]line, error) {
	out, err := e.nerdctl(ctx, "logs", name)
	if err != nil {
		return nil, err
	}
	var lines []line
	for _, l := range strings.Split(out, "\n") {
		m := lineRE.FindStringSubmatch(strings.TrimSpace(l))
		if m == nil {
			continue
		}
		n, _ := strconv.Atoi(m[1])
		eth0, _ := strconv.Atoi(m[2])
		lines = append(lines, line{n, eth0})
	}
	return lines, nil
}

// waitLines waits until the log has n lines past offset and its last
// count is at least min; it returns the lines past offset.
func waitLines(ctx context.Context, e *env, name string, offset, n, min int) ([]line, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		lines, err := logLines(ctx, e, name)
		if err == nil && len(lines) >= offset+n && lines[len(lines)-1].n >= min {
			return lines[offset:], nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = fmt.Errorf("%d lines past %d (want %d, last >= %d): %v", len(lines)-offset, offset, n, min, lines[max(offset, len(lines)-5):])
			}
			return nil, err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// fetchCount reads the count from the container's httpd at ip, from
// inside the sandbox.
func fetchCount(ctx context.Context, e *env, ip string) (int, error) {
	var lastErr error
	for i := 0; i < 20; i++ {
		out, err := e.inSandbox(ctx, "curl", "-sSf", "-m", "2", "http://"+ip+":8080/count")
		if err == nil {
			return strconv.Atoi(strings.TrimSpace(out))
		}
		lastErr = err
		time.Sleep(250 * time.Millisecond)
	}
	return 0, lastErr
}

// released checks that the stopped container's network is gone: no veth
// in the sandbox, and ip does not answer.
func released(ctx context.Context, e *env, ip string) error {
	out, err := e.inSandbox(ctx, "ip", "-o", "link", "show", "type", "veth")
	if err != nil {
		return err
	}
	if strings.TrimSpace(out) != "" {
		return fmt.Errorf("veth left in the sandbox: %s", out)
	}
	if _, err := e.inSandbox(ctx, "curl", "-sSf", "-m", "1", "http://"+ip+":8080/count"); err == nil {
		return fmt.Errorf("%s still answers", ip)
	}
	return nil
}

// sameIP checks that the restored container has its address back (when
// it was fixed with --ip) and answers on its address.
func sameIP(ctx context.Context, e *env, name, ip string, fixed bool) error {
	out, err := e.nerdctl(ctx, "inspect", "-f", "{{.NetworkSettings.IPAddress}}", name)
	if err != nil {
		return err
	}
	got := strings.TrimSpace(out)
	if fixed && got != ip {
		return fmt.Errorf("restored with address %q; it had %q (--ip)", got, ip)
	}
	ip = got
	if _, err := fetchCount(ctx, e, ip); err != nil {
		return fmt.Errorf("the restored container's %s does not answer: %w", ip, err)
	}
	return nil
}

// leftovers is what is left of a removed container: shims, runc state,
// veths, addresses the CNI plugins still hold.
func leftovers(ctx context.Context, e *env, name, id string) []string {
	var left []string
	deadline := time.Now().Add(15 * time.Second)
	for {
		left = left[:0]
		if out, err := e.nerdctl(ctx, "ps", "-a", "-q", "--filter", "name="+name); err != nil || strings.TrimSpace(out) != "" {
			left = append(left, fmt.Sprintf("nerdctl ps -a: %q %v", out, err))
		}
		if pid, ok := harness.Shims(e.d.Address)[id]; ok {
			left = append(left, fmt.Sprintf("shim %d", pid))
		}
		for _, root := range []string{e.d.RuncRoot, filepath.Join("/run/containerd/runc", e.d.Namespace)} {
			if _, err := os.Stat(filepath.Join(root, id)); err == nil {
				left = append(left, "runc state "+filepath.Join(root, id))
			}
		}
		if out, err := e.inSandbox(ctx, "ip", "-o", "link", "show", "type", "veth"); err != nil || strings.TrimSpace(out) != "" {
			left = append(left, fmt.Sprintf("veth: %q %v", out, err))
		}
		left = append(left, heldAddresses(e)...)
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// heldAddresses lists the addresses host-local still holds for a
// container (files named by an address in its network's dir).
func heldAddresses(e *env) []string {
	nets, _ := os.ReadDir(filepath.Join(e.dir, "cni-state", "networks"))
	var held []string
	for _, n := range nets {
		files, _ := os.ReadDir(filepath.Join(e.dir, "cni-state", "networks", n.Name()))
		for _, f := range files {
			if regexp.MustCompile(`^\d+\.\d+\.\d+\.\d+$`).MatchString(f.Name()) {
				held = append(held, "address held: "+n.Name()+"/"+f.Name())
			}
		}
	}
	return held
}
