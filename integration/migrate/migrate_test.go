package migrate_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	ctrd "github.com/ckpt-dev/ckpt/integration/containerd/harness"
	"github.com/ckpt-dev/ckpt/integration/migrate/harness"
	"github.com/ckpt-dev/ckpt/runtime/policy"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
)

// counter prints 1, 2, 3, ... every 20ms; the count lives in the shell's
// memory, so a moved shell continues where it was.
var counter = []string{"sh", "-c", "i=0; while :; do i=$((i+1)); echo $i; sleep 0.02; done"}

var number = regexp.MustCompile(`(?m)^(\d+)\n`)

func lastNumber(s string) int {
	ms := number.FindAllStringSubmatch(s, -1)
	if len(ms) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(ms[len(ms)-1][1])
	return n
}

// expectCounts waits until out shows a number above last.
func expectCounts(t *testing.T, out *syncBuffer, last int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for lastNumber(out.String()) <= last {
		if time.Now().After(deadline) {
			t.Fatalf("the counter did not go on past %d in %s; output:\n%s", last, timeout, lastLines(out.String(), 10))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// forEachMode runs test as a subtest per mode.
func forEachMode(t *testing.T, test func(t *testing.T, h *harness.Hosts, m mode)) {
	h := hosts(t)
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) { test(t, h, m) })
	}
}

func TestMigrateCounter(t *testing.T) { forEachMode(t, testCounter) }

func testCounter(t *testing.T, h *harness.Hosts, mode mode) {
	c := newContainer(t, h, counter)
	out := &syncBuffer{}
	startTask(t, h, c, nil, out, false)
	waitMatch(t, out, regexp.MustCompile(`\n5\n`), 10*time.Second)
	before := snapshotOf(t, h.Dst)

	migrate(t, h, c.ID(), mode, "--stdio", "fifo:"+fifoDir(t, h))
	last := lastNumber(out.String())

	moved := &syncBuffer{}
	attach(t, h.Dst, c.ID(), nil, moved)
	waitMatch(t, moved, regexp.MustCompile(`\n\d+\n\d+\n`), 10*time.Second)
	first, _ := strconv.Atoi(strings.SplitN(strings.TrimLeft(moved.String(), "\n"), "\n", 2)[0])
	if first <= last || first > last+500 {
		t.Fatalf("the moved counter shows %d first; the source's had reached %d (it must continue from there)", first, last)
	}
	expectGoneFromSource(t, h, c.ID())
	expectOnlyContainer(t, h.Dst, c.ID(), before)
	expectNoRestoreAnnotations(t, h.Dst, c.ID())
}

// TestMigrateMemory moves a process holding known data, 256 MiB with
// stop-and-copy and 1 GiB with post-copy (CKPT_MIGRATE_MIB sets both); the
// checksum its memory gives on the target, computed in the container, is
// the one it gave on the source.
func TestMigrateMemory(t *testing.T) { forEachMode(t, testMemory) }

func testMemory(t *testing.T, h *harness.Hosts, mode mode) {
	mib := 256
	if mode.postCopy {
		mib = 1024
	}
	if v, err := strconv.Atoi(os.Getenv("CKPT_MIGRATE_MIB")); err == nil && v > 0 {
		mib = v
	}
	c := newContainer(t, h, []string{"memsum", strconv.Itoa(mib)})
	out := &syncBuffer{}
	startTask(t, h, c, nil, out, false)
	sum := waitMatch(t, out, firstSum, 2*time.Minute)[1]

	start := time.Now()
	said := migrate(t, h, c.ID(), mode, "--stdio", "fifo:"+fifoDir(t, h))
	t.Logf("moved %d MiB in %s: %s", mib, time.Since(start), regexp.MustCompile(`downtime [^,]+, total [^,]+`).FindString(said))

	moved := &syncBuffer{}
	task := attach(t, h.Dst, c.ID(), nil, moved)
	ctx := h.Dst.Context(context.Background())
	if err := task.Kill(ctx, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	got := waitMatch(t, moved, anySum, 2*time.Minute)[1]
	if got != sum {
		t.Fatalf("memory checksum on the target %s, on the source %s", got, sum)
	}
	expectGoneFromSource(t, h, c.ID())
}

// TestMigrateTerminal moves a shell on a terminal; on the target the same
// shell (a variable set before the move) answers what is typed.
func TestMigrateTerminal(t *testing.T) { forEachMode(t, testTerminal) }

func testTerminal(t *testing.T, h *harness.Hosts, mode mode) {
	c := newContainer(t, h, []string{"sh"}, oci.WithTTY)
	stdin, typed := io.Pipe()
	t.Cleanup(func() { typed.Close() })
	out := &syncBuffer{}
	startTask(t, h, c, stdin, out, true)
	fmt.Fprintf(typed, "x=kept; echo set-$((1+1))\n")
	waitMatch(t, out, regexp.MustCompile(`set-2`), 10*time.Second)

	migrate(t, h, c.ID(), mode, "--stdio", "fifo:"+fifoDir(t, h))

	stdin2, typed2 := io.Pipe()
	t.Cleanup(func() { typed2.Close() })
	moved := &syncBuffer{}
	attach(t, h.Dst, c.ID(), stdin2, moved)
	fmt.Fprintf(typed2, "echo $x-$((40+2))\n")
	waitMatch(t, moved, regexp.MustCompile(`kept-42`), 10*time.Second)
}

// TestMigrateListeningSocket moves an HTTP server; on the target the same
// server (its page names the token it was started with) answers.
func TestMigrateListeningSocket(t *testing.T) { forEachMode(t, testListeningSocket) }

func testListeningSocket(t *testing.T, h *harness.Hosts, mode mode) {
	token := fmt.Sprintf("served-%d", time.Now().UnixNano())
	c := newContainer(t, h, []string{"sh", "-c", "mkdir -p /www && echo " + token + " > /www/index.html && exec httpd -f -p 8080 -h /www"})
	startTask(t, h, c, nil, io.Discard, false)
	get := []string{"wget", "-qO-", "http://127.0.0.1:8080/"}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(execIn(t, h.Src, c.ID(), get), token) {
		if time.Now().After(deadline) {
			t.Fatal("the server does not answer on the source")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Nothing restarts httpd: what answers on the target is the restored
	// process on its restored listening socket.
	migrate(t, h, c.ID(), mode)
	if got := execIn(t, h.Dst, c.ID(), get); !strings.Contains(got, token) {
		t.Fatalf("the moved server answers %q, want %q", got, token)
	}
}

// execIn runs args in the container's task on d and returns the output.
func execIn(t *testing.T, d *ctrd.Daemon, id string, args []string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(d.Context(context.Background()), 30*time.Second)
	defer cancel()
	c, err := d.Client.LoadContainer(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	task, err := c.Task(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := c.Spec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p := *spec.Process
	p.Args, p.Terminal = args, false
	out := &syncBuffer{}
	eid := fmt.Sprintf("exec-%d", seq.Add(1))
	proc, err := task.Exec(ctx, eid, &p, cio.NewCreator(cio.WithFIFODir(d.Dir+"/fifo"), cio.WithStreams(nil, out, out)))
	if err != nil {
		t.Fatal(err)
	}
	defer proc.Delete(ctx, client.WithProcessKill)
	ch, err := proc.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := proc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	case <-ctx.Done():
		t.Fatalf("exec %v: no exit", args)
	}
	proc.IO().Wait()
	return out.String()
}

// expectGoneFromSource checks the source has neither the container nor
// a checkpoint image left.
func expectGoneFromSource(t *testing.T, h *harness.Hosts, id string) {
	t.Helper()
	ctx := h.Src.Context(context.Background())
	if _, err := h.Src.Client.LoadContainer(ctx, id); !errdefs.IsNotFound(err) {
		t.Errorf("the source still has container %s (err %v)", id, err)
	}
	imgs, err := h.Src.Client.ImageService().List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range imgs {
		if strings.HasPrefix(i.Name, "ckpt-migrate/") {
			t.Errorf("the source keeps checkpoint image %s", i.Name)
		}
	}
}

// state is what a target holds: content, snapshots, leases.
type state struct {
	content   map[digest.Digest]bool
	snapshots map[string]bool
	leases    int
}

func snapshotOf(t *testing.T, d *ctrd.Daemon) state {
	t.Helper()
	ctx := d.Context(context.Background())
	s := state{content: map[digest.Digest]bool{}, snapshots: map[string]bool{}}
	if err := d.Client.ContentStore().Walk(ctx, func(i content.Info) error {
		s.content[i.Digest] = true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := d.Client.SnapshotService("overlayfs").Walk(ctx, func(_ context.Context, i snapshots.Info) error {
		s.snapshots[i.Name] = true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ls, err := d.Client.LeasesService().List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s.leases = len(ls)
	return s
}

// expectNothingNew checks d holds no container id and no content,
// snapshot or lease it did not hold before.
func expectNothingNew(t *testing.T, d *ctrd.Daemon, id string, before state) {
	t.Helper()
	ctx := d.Context(context.Background())
	if _, err := d.Client.LoadContainer(ctx, id); !errdefs.IsNotFound(err) {
		t.Errorf("the target has container %s (err %v)", id, err)
	}
	expectOnlyContainer(t, d, "", before)
}

// expectOnlyContainer checks that what is new on d since before is at most
// the snapshot of container id (an active one named id), no content
// (the checkpoint's blobs went with the lease) and no lease.
func expectOnlyContainer(t *testing.T, d *ctrd.Daemon, id string, before state) {
	t.Helper()
	now := snapshotOf(t, d)
	for dg := range now.content {
		if !before.content[dg] {
			t.Errorf("the target keeps content %s", dg)
		}
	}
	for s := range now.snapshots {
		if !before.snapshots[s] && s != id {
			t.Errorf("the target keeps snapshot %s", s)
		}
	}
	if now.leases > before.leases {
		ls, _ := d.Client.LeasesService().List(d.Context(context.Background()))
		t.Errorf("the target keeps leases: %v", leaseIDs(ls))
	}
}

func leaseIDs(ls []leases.Lease) []string {
	var ids []string
	for _, l := range ls {
		ids = append(ids, l.ID)
	}
	return ids
}

// TestMigrateCopiesImage: a target without the container's image gets it
// along with the checkpoint (blobs, image record, unpacked snapshot), and
// keeps it after the move (the gc labels hold it once the lease is gone).
func TestMigrateCopiesImage(t *testing.T) {
	h := hosts(t)
	ctx := h.Dst.Context(context.Background())
	if err := h.Dst.Client.ImageService().Delete(ctx, ctrd.ImageName, images.SynchronousDelete()); err != nil {
		t.Fatal(err)
	}
	c := newContainer(t, h, counter)
	out := &syncBuffer{}
	startTask(t, h, c, nil, out, false)
	waitMatch(t, out, regexp.MustCompile(`\n5\n`), 10*time.Second)

	migrate(t, h, c.ID(), stopAndCopy, "--stdio", "fifo:"+fifoDir(t, h))
	last := lastNumber(out.String())
	moved := &syncBuffer{}
	attach(t, h.Dst, c.ID(), nil, moved)
	expectCounts(t, moved, last, 10*time.Second)

	img, err := h.Dst.Client.GetImage(ctx, ctrd.ImageName)
	if err != nil {
		t.Fatalf("the image did not stay on the target: %v", err)
	}
	if img.Target().Digest != h.Src.Image.Target().Digest {
		t.Errorf("the target's image is %s, the source's %s", img.Target().Digest, h.Src.Image.Target().Digest)
	}
	// A garbage collection (a synchronous lease delete runs one) must not
	// take what the image needs.
	l, err := h.Dst.Client.LeasesService().Create(ctx, leases.WithRandomID())
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Dst.Client.LeasesService().Delete(ctx, l, leases.SynchronousDelete); err != nil {
		t.Fatal(err)
	}
	if ok, err := img.IsUnpacked(ctx, "overlayfs"); err != nil || !ok {
		t.Errorf("the copied image is not unpacked on the target after a collection (%v, %v)", ok, err)
	}
	if _, err := content.ReadBlob(ctx, h.Dst.Client.ContentStore(), img.Target()); err != nil {
		t.Errorf("the copied image's manifest is gone: %v", err)
	}
}

// expectNoRestoreAnnotations: the moved container's spec keeps no
// io.ckpt.restore.* annotation, which would make a later restore of it
// look for the source's page server.
func expectNoRestoreAnnotations(t *testing.T, d *ctrd.Daemon, id string) {
	t.Helper()
	ctx := d.Context(context.Background())
	c, err := d.Client.LoadContainer(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := c.Spec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for k := range spec.Annotations {
		if strings.HasPrefix(k, policy.RestoreAnnotationPrefix) {
			t.Errorf("the moved container's spec keeps %s=%s", k, spec.Annotations[k])
		}
	}
}
