package ctrd

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// TCP is containerd's remote gRPC endpoint: `[grpc] tcp_address`, with
// mutual TLS (tcp_tls_ca verifies clients' certificates).
type TCP struct {
	Address       string // HOST:PORT
	CA, Cert, Key string // PEM files
}

// config is the endpoint's lines of `[grpc]`; none for nil.
func (t *TCP) config() string {
	if t == nil {
		return ""
	}
	return fmt.Sprintf("  tcp_address = '%s'\n  tcp_tls_ca = '%s'\n  tcp_tls_cert = '%s'\n  tcp_tls_key = '%s'\n",
		t.Address, t.CA, t.Cert, t.Key)
}

// WithNetNS runs containerd, hence its shims, in the network namespace
// at path (e.g. /run/netns/NAME): a "host" of its own on this machine.
func WithNetNS(path string) Option {
	return func(s *settings) { s.netns = path }
}

// WithTCP makes containerd listen on t too.
func WithTCP(t TCP) Option {
	return func(s *settings) { s.tcp = &t }
}

// WithoutShim starts containerd without ckpt's shim anywhere on its PATH:
// a host where io.containerd.ckpt.v2 is not installed.
func WithoutShim() Option {
	return func(s *settings) { s.noShim = true }
}

// WithPathFirst puts dirs at the front of containerd's (and the shims')
// PATH, after the shim's dir: stand-ins for host binaries (criu, runc).
func WithPathFirst(dirs ...string) Option {
	return func(s *settings) { s.prepaths = append(s.prepaths, dirs...) }
}

// command is containerd, entered into the network namespace if one was
// given (nsenter execs containerd: the pid and Pdeathsig stay). Without
// the shim, containerd runs from a link in bin: it looks for a shim
// missing from PATH in its own executable's dir too.
func (s *settings) command(cfg, bin string) (*exec.Cmd, error) {
	path, err := exec.LookPath(ContainerdBin())
	if err != nil {
		return nil, fmt.Errorf("containerd: %w", err)
	}
	if s.noShim {
		own := filepath.Join(bin, "containerd")
		if err := os.Link(path, own); err != nil {
			data, err := os.ReadFile(path)
			if err != nil {
				return nil, err
			}
			if err := os.WriteFile(own, data, 0o755); err != nil {
				return nil, err
			}
		}
		path = own
	}
	if s.sandbox != nil {
		return s.sandbox.Command(path, "--config", cfg), nil
	}
	if s.ownHost != nil {
		// The host's keeper is in the netns already.
		return s.ownHost.command(path, "--config", cfg), nil
	}
	if s.netns == "" {
		return exec.Command(path, "--config", cfg), nil
	}
	return exec.Command("nsenter", "--net="+s.netns, "--", path, "--config", cfg), nil
}

// env is the daemon's environment: the shim's dir first on PATH. Without
// the shim, the PATH leaves out /usr/local/bin, where `make install` puts
// it (containerd finds shims on PATH).
func (s *settings) env(bin string) []string {
	env := containerdPath(os.Environ(), strings.Join(append([]string{bin}, s.prepaths...), ":"))
	if !s.noShim {
		return env
	}
	out := env[:0]
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			var keep []string
			for _, p := range strings.Split(v, ":") {
				if p != "/usr/local/bin" {
					keep = append(keep, p)
				}
			}
			e = "PATH=" + strings.Join(keep, ":")
		}
		out = append(out, e)
	}
	return out
}
