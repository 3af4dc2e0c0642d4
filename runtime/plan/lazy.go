package plan

import (
	"errors"
	"fmt"
	"net"
	"strconv"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
)

// TLS is CRIU's page server TLS (GnuTLS, X.509): the same files on both
// ends. Without CACert CRIU uses the system's CAs; without Cert and Key it
// uses /etc/pki's defaults.
type TLS struct {
	Enabled           bool
	CACert, Cert, Key string
	NoCNVerify        bool
}

// PageServer is where a lazy dump serves its memory (CRIU listens) and a
// lazy restore fetches it (criu lazy-pages connects).
type PageServer struct {
	Host string
	Port int
	TLS  TLS
}

// ParsePageServer parses ADDR:PORT ("[::1]:PORT" for IPv6).
func ParsePageServer(s string) (PageServer, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return PageServer{}, fmt.Errorf("page server %q: want ADDR:PORT: %w", s, err)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return PageServer{}, fmt.Errorf("page server %q: port must be 1-65535", s)
	}
	if host != "" && net.ParseIP(host) == nil {
		// CRIU resolves names itself, but a typo is better caught here,
		// before the container is frozen.
		if _, err := net.LookupHost(host); err != nil {
			return PageServer{}, fmt.Errorf("page server %q: %w", s, err)
		}
	}
	return PageServer{Host: host, Port: n}, nil
}

// Args are criu's command-line flags for the TLS options.
func (t TLS) Args() []string {
	if !t.Enabled {
		return nil
	}
	a := []string{"--tls"}
	if t.CACert != "" {
		a = append(a, "--tls-cacert", t.CACert)
	}
	if t.Cert != "" {
		a = append(a, "--tls-cert", t.Cert)
	}
	if t.Key != "" {
		a = append(a, "--tls-key", t.Key)
	}
	if t.NoCNVerify {
		a = append(a, "--tls-no-cn-verify")
	}
	return a
}

// validate catches options CRIU would only reject after freezing.
func (t TLS) validate() error {
	if !t.Enabled && (t.CACert != "" || t.Cert != "" || t.Key != "") {
		return errors.New("TLS files given without TLS enabled")
	}
	if (t.Cert == "") != (t.Key == "") {
		return errors.New("TLS needs both a certificate and its key")
	}
	return nil
}

// setLazyDump makes a dump leave the memory pages in place and serve them
// from a page server once the images are written (status-ready).
func setLazyDump(opts *rpc.CriuOpts, ps *PageServer) error {
	if ps == nil {
		return nil
	}
	if ps.Port <= 0 {
		return errors.New("lazy dump: the page server needs a port")
	}
	if err := ps.TLS.validate(); err != nil {
		return fmt.Errorf("lazy dump: %w", err)
	}
	opts.LazyPages = ptr(true)
	// CRIU 4.2 ignores the address of a lazy dump's page server in RPC
	// mode; runtime/container passes it in a config file too.
	opts.Ps = &rpc.CriuPageServerInfo{Address: ptr(ps.Host), Port: ptr(int32(ps.Port))}
	if ps.TLS.Enabled {
		opts.Tls = ptr(true)
		if ps.TLS.CACert != "" {
			opts.TlsCacert = ptr(ps.TLS.CACert)
		}
		if ps.TLS.Cert != "" {
			opts.TlsCert = ptr(ps.TLS.Cert)
		}
		if ps.TLS.Key != "" {
			opts.TlsKey = ptr(ps.TLS.Key)
		}
		if ps.TLS.NoCNVerify {
			opts.TlsNoCnVerify = ptr(true)
		}
	}
	return nil
}
