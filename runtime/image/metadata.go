package image

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"
)

// MetadataFile is ckpt's own file in the image dir. It is written last: an
// image dir without it is an incomplete (or foreign) checkpoint.
const MetadataFile = "ckpt.json"

// FormatVersion is the newest version of ckpt.json this ckpt reads and
// writes. Version 2 brought criu_in_net_ns and the entries of a recreated
// tmpfs: a ckpt that reads only version 1 would restore such an image
// into its own network namespace, or with an empty /dev. Version 3 brought
// lazy_pages: images without their memory, which an older ckpt would try to
// restore in full.
const FormatVersion = 3

// MaxMetadataSize caps ckpt.json when reading it.
const MaxMetadataSize = 1 << 20

// ErrNoMetadata means the image dir has no ckpt.json.
var ErrNoMetadata = errors.New("no " + MetadataFile + ": the checkpoint is incomplete or was not made by ckpt")

// Metadata is ckpt.json.
type Metadata struct {
	FormatVersion int       `json:"format_version"`
	Created       time.Time `json:"created"`
	ContainerID   string    `json:"container_id"`
	CRIUVersion   string    `json:"criu_version"`
	// CRIUVersionInt is CRIU's comparable form (major*10000+minor*100+sub).
	CRIUVersionInt int    `json:"criu_version_int"`
	RuncVersion    string `json:"runc_version"`
	// Options are the CRIU options the checkpoint used; restore re-applies
	// them.
	Options Options `json:"options"`
	// Terminal is set when the init has a pty: restore then needs a
	// console to take the master.
	Terminal   bool        `json:"terminal"`
	WindowSize *WindowSize `json:"window_size,omitempty"`
	// SpecDigest is the sha256 of the bundle's config.json at checkpoint.
	SpecDigest string `json:"spec_digest,omitempty"`
	// Stdio describes the init's fds 0-2.
	Stdio []Stdio `json:"stdio,omitempty"`
	// CgroupHierarchies are the cgroup hierarchies the tasks were in, by
	// CRIU's names ("cpu,cpuacct", "systemd", "unified"), when the dump
	// used the host's /sys/fs/cgroup as CRIU's cgroup yard: restore does
	// too only if all of them are there.
	CgroupHierarchies []string `json:"cgroup_hierarchies,omitempty"`
	// FreshTmpfs are tmpfs mounts that were empty at checkpoint: CRIU did
	// not archive them, restore mounts new empty ones in their place.
	FreshTmpfs []FreshTmpfs `json:"fresh_tmpfs,omitempty"`
	// Stats are CRIU's own dump statistics (stats-dump), when readable.
	Stats   *DumpStats `json:"stats,omitempty"`
	Timings Timings    `json:"timings"`
}

// Options are the checkpoint-time CRIU options that restore must repeat.
type Options struct {
	LeaveRunning   bool `json:"leave_running,omitempty"`
	TCPEstablished bool `json:"tcp_established,omitempty"`
	ExtUnixSK      bool `json:"ext_unix_sk,omitempty"`
	ShellJob       bool `json:"shell_job,omitempty"`
	FileLocks      bool `json:"file_locks,omitempty"`
	EmptyNetNS     bool `json:"empty_net_ns,omitempty"`
	// LoopbackOnly: the container's own network namespace held only an up
	// lo the container could not change (no CAP_NET_ADMIN); it was dumped
	// empty (EmptyNetNS) and restore brings lo up.
	LoopbackOnly bool `json:"loopback_only,omitempty"`
	// CRIUInNetNS: with LoopbackOnly, criu ran inside the container's
	// network namespace, so the image holds no network namespace at all
	// (CRIU reads no links, routes or netfilter tables of the namespace
	// it runs in), and restore starts criu in a new one with lo up.
	CRIUInNetNS bool   `json:"criu_in_net_ns,omitempty"`
	CgroupsMode string `json:"cgroups_mode,omitempty"`
	ParentPath  string `json:"parent_path,omitempty"`
	PreDump     bool   `json:"pre_dump,omitempty"`
	// LazyPages: the memory is not in the images; it was served by the
	// dumping criu's page server to one lazy restore.
	LazyPages bool `json:"lazy_pages,omitempty"`
	// ExternalNetNS and ExternalPidNS: the namespace was the spec's path
	// and was not dumped; restore needs a namespace there again.
	ExternalNetNS bool `json:"external_net_ns,omitempty"`
	ExternalPidNS bool `json:"external_pid_ns,omitempty"`
}

// FreshTmpfs is one empty tmpfs superblock and the mounts of it, dumped as
// CRIU external mounts under Key.
type FreshTmpfs struct {
	Key string `json:"key"`
	// Mountpoints are where it is mounted, as the container sees them.
	Mountpoints []string `json:"mountpoints"`
	// Flags are the mounts' options ("ro,nosuid,relatime"), Data the
	// superblock's ("size=65536k,mode=755"), both as in mountinfo.
	Flags string `json:"flags"`
	Data  string `json:"data,omitempty"`
	// Entries are what it held, in the order restore creates them again
	// (a directory before what is in it); none for most. RootMtimeNs is
	// the root directory's modification time when there are entries.
	Entries     []TmpfsEntry `json:"entries,omitempty"`
	RootMtimeNs int64        `json:"root_mtime_ns,omitempty"`
	// Major and Minor are the superblock's device while checkpointing;
	// they mean nothing afterwards and are not recorded.
	Major, Minor int `json:"-"`
}

// TmpfsEntry is one inode of a recreated tmpfs: a directory, a device
// node, a symlink, a fifo or an empty file, as /dev holds them.
type TmpfsEntry struct {
	// Path is relative to the tmpfs's root, without "..".
	Path string `json:"path"`
	// Type is dir, file, symlink, char, block or fifo.
	Type string `json:"type"`
	// Mode holds the permission bits with setuid, setgid and sticky.
	Mode uint32 `json:"mode"`
	UID  uint32 `json:"uid"`
	GID  uint32 `json:"gid"`
	// Major and Minor of a device node.
	Major uint32 `json:"major,omitempty"`
	Minor uint32 `json:"minor,omitempty"`
	// Target of a symlink.
	Target string `json:"target,omitempty"`
	// MtimeNs is the modification time; zero for a mountpoint, whose
	// own inode the mount on it hides.
	MtimeNs int64 `json:"mtime_ns,omitempty"`
	// Mountpoint: another mount sits on it; it is made as runc makes a
	// mountpoint (mode 0755, root's), and the mount's content is that
	// mount's business.
	Mountpoint bool `json:"mountpoint,omitempty"`
}

// WindowSize of the container's terminal.
type WindowSize struct {
	Rows uint16 `json:"rows"`
	Cols uint16 `json:"cols"`
}

// Stdio is one of the init's fds 0-2 at checkpoint.
type Stdio struct {
	Fd   int    `json:"fd"`
	Link string `json:"link"`
	// External is CRIU's key ("file[mnt:ino]") when the fd was a file
	// outside the container's mounts, dumped as external: restore must
	// hand CRIU a file for it on that fd.
	External string `json:"external,omitempty"`
}

// Timings are wall-clock durations measured by ckpt, in milliseconds.
type Timings struct {
	// FreezeToPostDumpMs runs from pre-dump to post-dump: the time the
	// container was frozen for, give or take the freeze itself.
	FreezeToPostDumpMs int64 `json:"freeze_to_post_dump_ms,omitempty"`
	DumpMs             int64 `json:"dump_ms"`
	TotalMs            int64 `json:"total_ms"`
}

// Encode returns ckpt.json's bytes, with the oldest format version that
// holds everything m says, so that an older ckpt restores what it can
// restore right and refuses the rest.
func (m *Metadata) Encode() ([]byte, error) {
	c := *m
	c.FormatVersion = c.neededVersion()
	return json.MarshalIndent(&c, "", "  ")
}

func (m *Metadata) neededVersion() int {
	if m.Options.LazyPages {
		return 3
	}
	if m.Options.CRIUInNetNS || slices.ContainsFunc(m.FreshTmpfs, func(t FreshTmpfs) bool { return len(t.Entries) > 0 }) {
		return 2
	}
	return 1
}

// WriteMetadata writes ckpt.json into the image dir atomically.
func WriteMetadata(dir string, m *Metadata) error {
	data, err := m.Encode()
	if err != nil {
		return err
	}
	return writeFileAtomic(dir, MetadataFile, data, 0o600)
}

// ReadMetadata reads ckpt.json from the image dir open as dir.
func ReadMetadata(dir *os.File) (*Metadata, error) {
	data, err := readFileAt(dir, MetadataFile, MaxMetadataSize)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("image %s: %w", dir.Name(), ErrNoMetadata)
	}
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", dir.Name(), err)
	}
	m, err := ParseMetadata(data)
	if err != nil {
		// The file's name alone does not say which checkpoint is bad.
		return nil, fmt.Errorf("image %s: %w", dir.Name(), err)
	}
	return m, nil
}

// ReadMetadataPath is ReadMetadata for a dir given by path.
func ReadMetadataPath(dir string) (*Metadata, error) {
	d, err := openDir(dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return ReadMetadata(d)
}

// ParseMetadata decodes and checks ckpt.json's content.
func ParseMetadata(data []byte) (*Metadata, error) {
	var m Metadata
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", MetadataFile, err)
	}
	if m.FormatVersion < 1 || m.FormatVersion > FormatVersion {
		return nil, fmt.Errorf("%s: format version %d, this ckpt reads 1 to %d", MetadataFile, m.FormatVersion, FormatVersion)
	}
	if len(m.Stdio) > 3 {
		return nil, fmt.Errorf("%s: %d stdio entries, at most 3", MetadataFile, len(m.Stdio))
	}
	for _, s := range m.Stdio {
		if s.Fd < 0 || s.Fd > 2 {
			return nil, fmt.Errorf("%s: stdio fd %d out of range", MetadataFile, s.Fd)
		}
	}
	return &m, nil
}

// PendingMetadata is ckpt.json written before CRIU kills the container (at
// post-dump), under a name restore does not read: a disk that cannot take
// it fails the checkpoint while CRIU can still roll back.
type PendingMetadata struct {
	dir, path string
}

// WritePending writes m to a pending file in dir.
func WritePending(dir string, m *Metadata) (*PendingMetadata, error) {
	data, err := m.Encode()
	if err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(dir, "."+MetadataFile+".pending-")
	if err != nil {
		return nil, err
	}
	_, werr := f.Write(data)
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		os.Remove(f.Name())
		return nil, werr
	}
	return &PendingMetadata{dir: dir, path: f.Name()}, nil
}

// Commit writes the final m as ckpt.json. Should that fail, the pending
// file (the same metadata without what only the end of the dump knows)
// is renamed into place instead, so the checkpoint stays restorable.
func (p *PendingMetadata) Commit(m *Metadata) error {
	if err := WriteMetadata(p.dir, m); err != nil {
		if rerr := os.Rename(p.path, p.dir+"/"+MetadataFile); rerr != nil {
			return fmt.Errorf("write %s: %w (and the pending copy: %v)", MetadataFile, err, rerr)
		}
		return nil
	}
	os.Remove(p.path)
	return nil
}

// Discard removes the pending file.
func (p *PendingMetadata) Discard() {
	if p != nil {
		os.Remove(p.path)
	}
}
