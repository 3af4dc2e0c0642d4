package container

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/ckpt-dev/ckpt/runtime/cgroup"
	"github.com/ckpt-dev/ckpt/runtime/proc"
	"github.com/ckpt-dev/ckpt/runtime/runcstate"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/moby/sys/mountinfo"
	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/cgroups/manager"
	"golang.org/x/sys/unix"
)

// A ckpt killed with SIGKILL in the middle of a restore cannot clean up:
// the criu-root and tmpfs mounts, the cgroups, the state dir and the tasks
// criu forked stay (criu dies of its parent death signal, the tasks it
// forked do not). runc cannot delete that: its state.json is written only
// at post-restore. Worse, were the mounts in runc's state dir, `runc
// delete --force`, which removes the dir recursively when it has no
// state.json, would delete the bundle's rootfs through the criu-root bind
// before failing on a tmpfs. So a restore makes its mounts in a work dir
// of its own, outside runc's root (WorkDir: a name derived from the root
// and the id), and records there what it makes before it makes any of it
// (restoreRecord); the work dir goes once the restore is complete or
// undone. A record whose owner is dead marks a leftover: `ckpt delete`
// removes it, and the next restore of the id removes it first and says so
// in its log; `runc delete --force` can then remove the state dir safely
// (the rest goes with the next ckpt restore or delete of the id). That is
// safe because everything recorded is the dead restore's: its tasks never
// ran as the container (CRIU resumes them only after its last stage) and
// the id's cgroup was checked empty when the restore began.

// workRoot holds the work dirs of restores in progress.
var workRoot = "/run/ckpt/restore" // a variable for tests

// recordFile is the record of a restore, in its work dir.
const recordFile = "record.json"

// WorkDir is the work dir of a restore of id under runc's root.
func WorkDir(root, id string) (string, error) {
	if err := runcstate.ValidateID(id); err != nil {
		return "", err
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(abs + "\x00" + id))
	return filepath.Join(workRoot, hex.EncodeToString(sum[:10])), nil
}

// restoreRecord is what a restore makes, for whoever cleans up after it.
type restoreRecord struct {
	OwnerPid   int    `json:"owner_pid"`
	OwnerStart uint64 `json:"owner_start"`
	Root       string `json:"root"`
	ID         string `json:"id"`
	// StateDir is set once the restore made runc's state dir.
	StateDir string            `json:"state_dir,omitempty"`
	Cgroups  map[string]string `json:"cgroup_paths"`
	// LogFile is CRIU's log: every task criu forks holds it open, also
	// those not yet in the container's cgroup.
	LogFile string `json:"log_file"`
}

// writeRecord writes rec into dir, owned by this process.
func writeRecord(dir string, rec *restoreRecord) error {
	st, err := proc.ReadStat(os.Getpid())
	if err != nil {
		return err
	}
	rec.OwnerPid, rec.OwnerStart = os.Getpid(), st.StartTime
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, recordFile), data, 0o600)
}

// ErrRestoreInProgress: the id's restore is still running in a live ckpt
// process (or shim).
var ErrRestoreInProgress = errors.New("a restore of this id is in progress")

// Leftover reports whether a dead restore of id under root left something
// (see above). It fails with ErrRestoreInProgress while the restore's
// process lives.
func Leftover(root, id string) (bool, error) {
	dir, err := WorkDir(root, id)
	if err != nil {
		return false, err
	}
	rec, err := readRecord(dir)
	if err != nil {
		return false, err
	}
	if rec == nil {
		// A work dir without a record: the restore died before it wrote
		// one, so it made nothing else.
		_, err := os.Stat(dir)
		return err == nil, nil
	}
	if proc.Alive(rec.OwnerPid, rec.OwnerStart) {
		return false, fmt.Errorf("container %q: %w (ckpt pid %d): %w", id, ErrRestoreInProgress, rec.OwnerPid, errdefs.ErrFailedPrecondition)
	}
	return true, nil
}

func readRecord(dir string) (*restoreRecord, error) {
	data, err := os.ReadFile(filepath.Join(dir, recordFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var rec restoreRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, recordFile), err)
	}
	return &rec, nil
}

// RemoveLeftover removes what a dead restore of id left: its processes,
// mounts, cgroups, work dir and runc state dir. It refuses while the
// restore's process lives; without a leftover it does nothing.
func RemoveLeftover(ctx context.Context, root, id string) error {
	ok, err := Leftover(root, id)
	if err != nil || !ok {
		return err
	}
	dir, _ := WorkDir(root, id)
	rec, err := readRecord(dir)
	if err != nil {
		return err
	}
	if rec == nil {
		return os.Remove(dir)
	}
	logger := log.G(ctx).WithField("container", id)
	var errs []error
	// The tasks first: they hold the mounts and the cgroups.
	if n := killHolders(rec.LogFile); n > 0 {
		logger.WithField("killed", n).Info("killed the left restore's criu tasks")
	}
	if len(rec.Cgroups) > 0 {
		cg, err := manager.NewWithPaths(&cgroups.Cgroup{Resources: &cgroups.Resources{}}, rec.Cgroups)
		if err == nil {
			err = cgroup.Destroy(cg)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("cgroup: %w", err))
		}
	}
	if rec.LogFile != "" {
		if err := unmountCRIUYards(filepath.Dir(rec.LogFile)); err != nil {
			errs = append(errs, fmt.Errorf("criu's cgroup yard: %w", err))
		}
	}
	if err := removeUnmounted(dir); err != nil {
		errs = append(errs, err)
	}
	if rec.StateDir != "" {
		if err := removeUnmounted(rec.StateDir); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove the restore of %q left by ckpt pid %d: %w", id, rec.OwnerPid, err)
	}
	logger.WithField("owner-pid", rec.OwnerPid).Info("removed what a restore left when its ckpt process died")
	return nil
}

// removeUnmounted detaches every mount at or below dir, then removes dir
// with what it holds, refusing if a mount is still there: a recursive
// removal must never reach through a bind into a rootfs.
func removeUnmounted(dir string) error {
	if err := unmountUnder(dir); err != nil {
		return err
	}
	left, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		return err
	}
	if len(left) > 0 {
		return fmt.Errorf("%s: %s is still mounted; not removing it", dir, left[0].Mountpoint)
	}
	return os.RemoveAll(dir)
}

// killHolders kills every process (but us) with path open: the tasks a
// dead restore's criu forked before it moved them into the cgroup.
func killHolders(path string) int {
	if path == "" {
		return 0
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	n := 0
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		fds, err := os.ReadDir("/proc/" + p.Name() + "/fd")
		if err != nil {
			continue
		}
		for _, fd := range fds {
			if l, err := os.Readlink("/proc/" + p.Name() + "/fd/" + fd.Name()); err == nil && l == path {
				if unix.Kill(pid, unix.SIGKILL) == nil {
					n++
				}
				break
			}
		}
	}
	return n
}

// unmountUnder detaches every mount at or below dir, deepest first.
func unmountUnder(dir string) error {
	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		return err
	}
	sort.Slice(mounts, func(i, j int) bool { return len(mounts[i].Mountpoint) > len(mounts[j].Mountpoint) })
	var errs []error
	for _, m := range mounts {
		if m.Mountpoint != dir && !strings.HasPrefix(m.Mountpoint, dir+"/") {
			continue
		}
		if err := unix.Unmount(m.Mountpoint, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
			errs = append(errs, fmt.Errorf("unmount %s: %w", m.Mountpoint, err))
		}
	}
	return errors.Join(errs...)
}
