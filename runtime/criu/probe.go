package criu

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"github.com/ckpt-dev/ckpt/runtime/bootcache"
)

// Version is CRIU's version as the VERSION request reports it.
type Version struct {
	Major, Minor, Sublevel int
	GitID                  string
	Name                   string
}

// Int is CRIU's own comparable form: major*10000 + minor*100 + sublevel.
func (v Version) Int() int { return v.Major*10000 + v.Minor*100 + v.Sublevel }

func (v Version) String() string {
	s := fmt.Sprintf("%d.%d", v.Major, v.Minor)
	if v.Sublevel != 0 {
		s += fmt.Sprintf(".%d", v.Sublevel)
	}
	if v.GitID != "" {
		s += " (" + v.GitID + ")"
	}
	return s
}

// AtLeast reports whether v >= major.minor.sublevel.
func (v Version) AtLeast(major, minor, sublevel int) bool {
	return v.Int() >= major*10000+minor*100+sublevel
}

// Version asks criu for its version and keeps the session open.
func (s *Session) Version(ctx context.Context) (Version, error) {
	resp, err := s.Do(ctx, &rpc.CriuReq{Type: rpc.CriuReqType_VERSION.Enum(), KeepOpen: ptr(true)}, nil)
	if err != nil {
		return Version{}, err
	}
	v := resp.GetVersion()
	return Version{
		Major: int(v.GetMajorNumber()), Minor: int(v.GetMinorNumber()), Sublevel: int(v.GetSublevel()),
		GitID: v.GetGitid(), Name: v.GetName(),
	}, nil
}

// Features asks which of the optional kernel features CRIU can use here
// and keeps the session open.
func (s *Session) Features(ctx context.Context) (Features, error) {
	// CRIU dereferences the features field without checking: always send it.
	want := &rpc.CriuFeatures{MemTrack: ptr(true), LazyPages: ptr(true), PidfdStore: ptr(true)}
	resp, err := s.Do(ctx, &rpc.CriuReq{Type: rpc.CriuReqType_FEATURE_CHECK.Enum(), KeepOpen: ptr(true), Features: want}, nil)
	if err != nil {
		return Features{}, err
	}
	f := resp.GetFeatures()
	return Features{MemTrack: f.GetMemTrack(), LazyPages: f.GetLazyPages(), PidfdStore: f.GetPidfdStore()}, nil
}

// Features CRIU found usable on this kernel.
type Features struct {
	// MemTrack is soft-dirty tracking, needed for pre-dump.
	MemTrack bool `json:"mem_track"`
	// LazyPages is userfaultfd, needed for lazy restore.
	LazyPages  bool `json:"lazy_pages"`
	PidfdStore bool `json:"pidfd_store"`
}

// Capabilities are what one criu binary can do on this host.
type Capabilities struct {
	Path     string   `json:"path"`
	Version  Version  `json:"version"`
	Features Features `json:"features"`
}

// Version gates for options ckpt uses, from CRIU's changelog.
func (c *Capabilities) OrphanPtsMaster() bool   { return c.Version.AtLeast(2, 12, 0) }
func (c *Capabilities) ExternalNetNS() bool     { return c.Version.AtLeast(3, 11, 0) }
func (c *Capabilities) CgroupV2Freezer() bool   { return c.Version.AtLeast(3, 14, 0) }
func (c *Capabilities) ExternalPidNS() bool     { return c.Version.AtLeast(3, 15, 0) }
func (c *Capabilities) StatusReadyNotify() bool { return c.Version.AtLeast(3, 15, 0) }
func (c *Capabilities) SinglePreDump() bool     { return c.Version.AtLeast(3, 17, 0) }
func (c *Capabilities) NetworkLockSkip() bool   { return c.Version.AtLeast(3, 17, 0) }
func (c *Capabilities) QueryExtFiles() bool     { return c.Version.AtLeast(3, 19, 0) }

// PreDump reports whether iterative pre-dump can work: it needs soft-dirty
// memory tracking, which some kernels lack.
func (c *Capabilities) PreDump() bool { return c.Features.MemTrack }

// capsCache keeps capabilities per criu binary, for this boot: see
// package bootcache.
var capsCache = &bootcache.Cache[*Capabilities]{File: "/run/ckpt/criu-capabilities.json"}

// Probe returns the capabilities of the criu at path ("" = PATH). Results
// are cached per binary (a replaced binary is probed again), so only the
// first call runs criu.
func Probe(ctx context.Context, path string) (*Capabilities, error) {
	resolved, err := resolve(path)
	if err != nil {
		return nil, err
	}
	if bin, err := bootcache.Identify(resolved); err == nil {
		if c, ok := capsCache.Load(bin); ok {
			return c, nil
		}
	}
	s, err := Start(ctx, Config{Path: resolved})
	if err != nil {
		return nil, err
	}
	defer s.Close()
	return s.Capabilities(ctx)
}

// Capabilities returns what this session's criu can do: from the cache, or
// asked on this very process (VERSION and FEATURE_CHECK with keep_open), so
// the real request that follows needs no second criu.
func (s *Session) Capabilities(ctx context.Context) (*Capabilities, error) {
	bin, berr := bootcache.Identify(s.path)
	if berr == nil {
		if c, ok := capsCache.Load(bin); ok {
			return c, nil
		}
	}
	v, err := s.Version(ctx)
	if err != nil {
		return nil, fmt.Errorf("criu version: %w", err)
	}
	f, err := s.Features(ctx)
	if err != nil {
		return nil, fmt.Errorf("criu feature check: %w", err)
	}
	c := &Capabilities{Path: s.path, Version: v, Features: f}
	if berr == nil {
		capsCache.Store(bin, c)
	}
	return c, nil
}

func resolve(path string) (string, error) {
	if path == "" {
		path = "criu"
	}
	p, err := exec.LookPath(path)
	if err != nil {
		return "", fmt.Errorf("criu not found (install CRIU >= 4.1 or give its path): %w", err)
	}
	if p, err = filepath.Abs(p); err != nil {
		return "", err
	}
	return p, nil
}
