// Package harness is the integration tests' name for internal/ctrd, the
// private containerd the tests and the benchmark share. The daemon moved
// there so that bench (a module of its own) depends on no test package;
// the tests keep this name so that they did not all change with it.
package harness

import "github.com/ckpt-dev/ckpt/internal/ctrd"

type (
	// Daemon is a running private containerd.
	Daemon = ctrd.Daemon
	// Option configures Start.
	Option = ctrd.Option
	// Sandbox is a network and mount namespace of the test's own.
	Sandbox = ctrd.Sandbox
	// Bind is a bind mount into a Sandbox.
	Bind = ctrd.Bind
	// Version is a containerd version.
	Version = ctrd.Version
	// TCP is containerd's remote gRPC endpoint with mutual TLS.
	TCP = ctrd.TCP
)

const (
	ImageName             = ctrd.ImageName
	Runtime               = ctrd.Runtime
	CRINamespace          = ctrd.CRINamespace
	CkptHandler           = ctrd.CkptHandler
	RuncHandler           = ctrd.RuncHandler
	PauseImageName        = ctrd.PauseImageName
	CheckpointAnnotations = ctrd.CheckpointAnnotations
	ContainerdBinEnv      = ctrd.ContainerdBinEnv
)

var (
	Start         = ctrd.Start
	WithCRI       = ctrd.WithCRI
	Shims         = ctrd.Shims
	UnmountUnder  = ctrd.UnmountUnder
	LayerTar      = ctrd.LayerTar
	WithSandbox   = ctrd.WithSandbox
	NewSandbox    = ctrd.NewSandbox
	ContainerdBin = ctrd.ContainerdBin
	CtrBin        = ctrd.CtrBin
	ParseVersion  = ctrd.ParseVersion
	WithNetNS     = ctrd.WithNetNS
	WithOwnHost   = ctrd.WithOwnHost
	WithTCP       = ctrd.WithTCP
	WithoutShim   = ctrd.WithoutShim
	WithPathFirst = ctrd.WithPathFirst
)
