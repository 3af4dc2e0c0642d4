package migrate

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// Endpoint is a containerd to talk to: "tcp://HOST:PORT" (containerd's
// `[grpc] tcp_address`, mutual TLS with CA, Cert and Key), or a unix
// socket path, "unix:///path" or "/path" (the local daemon, or a remote
// one's socket forwarded over SSH).
type Endpoint struct {
	Address       string
	CA, Cert, Key string
}

// endpoint is a parsed Endpoint.
type endpoint struct {
	network string // "tcp" or "unix"
	addr    string // host:port or a socket path
	host    string // tcp: the name the server's certificate must carry
}

func parseEndpoint(e Endpoint) (endpoint, error) {
	a := e.Address
	switch {
	case a == "":
		return endpoint{}, fmt.Errorf("no address: %w", errdefs.ErrInvalidArgument)
	case strings.HasPrefix(a, "tcp://"):
		hp := strings.TrimPrefix(a, "tcp://")
		host, port, err := net.SplitHostPort(hp)
		if err != nil {
			return endpoint{}, fmt.Errorf("address %q: want tcp://HOST:PORT: %v: %w", a, err, errdefs.ErrInvalidArgument)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return endpoint{}, fmt.Errorf("address %q: port %q: %w", a, port, errdefs.ErrInvalidArgument)
		}
		if e.CA == "" || e.Cert == "" || e.Key == "" {
			return endpoint{}, fmt.Errorf("address %q: a TCP endpoint needs --tls-ca, --tls-cert and --tls-key (containerd's TCP endpoint is mutual TLS): %w", a, errdefs.ErrInvalidArgument)
		}
		return endpoint{network: "tcp", addr: hp, host: host}, nil
	case strings.HasPrefix(a, "unix://"):
		return endpoint{network: "unix", addr: strings.TrimPrefix(a, "unix://")}, nil
	case strings.HasPrefix(a, "/"):
		return endpoint{network: "unix", addr: a}, nil
	}
	return endpoint{}, fmt.Errorf("address %q: want tcp://HOST:PORT or a unix socket path: %w", a, errdefs.ErrInvalidArgument)
}

// tlsConfig loads the client's certificate and the CA that must have
// signed the server's.
func tlsConfig(e Endpoint, host string) (*tls.Config, error) {
	pem, err := os.ReadFile(e.CA)
	if err != nil {
		return nil, fmt.Errorf("TLS CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("TLS CA %s: no PEM certificate in it: %w", e.CA, errdefs.ErrInvalidArgument)
	}
	cert, err := tls.LoadX509KeyPair(e.Cert, e.Key)
	if err != nil {
		return nil, fmt.Errorf("TLS client certificate %s / key %s: %v: %w", e.Cert, e.Key, err, errdefs.ErrInvalidArgument)
	}
	return &tls.Config{
		RootCAs: pool, Certificates: []tls.Certificate{cert},
		ServerName: host, MinVersion: tls.VersionTLS12,
		// Offered, not required: see tlsCreds.
		NextProtos: []string{"h2"},
	}, nil
}

// Dial connects to a containerd as `ckpt migrate` does: client.New for a socket, a gRPC
// connection with TLS credentials for TCP (client.New only dials unix
// sockets). The connection is lazy: preflight's first call is what
// reaches the server.
func Dial(e Endpoint, namespace string, timeout time.Duration) (*client.Client, error) {
	ep, err := parseEndpoint(e)
	if err != nil {
		return nil, err
	}
	if ep.network == "unix" {
		// gRPC would only say "deadline exceeded" for a missing socket.
		if _, err := os.Stat(ep.addr); err != nil {
			return nil, fmt.Errorf("containerd socket %s: %w: %w", ep.addr, err, errdefs.ErrUnavailable)
		}
		return client.New(ep.addr, client.WithDefaultNamespace(namespace), client.WithTimeout(timeout))
	}
	tc, err := tlsConfig(e, ep.host)
	if err != nil {
		return nil, err
	}
	bc := backoff.DefaultConfig
	bc.MaxDelay = timeout
	conn, err := grpc.NewClient("passthrough:///"+ep.addr,
		grpc.WithTransportCredentials(&tlsCreds{cfg: tc}),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: bc, MinConnectTimeout: timeout}),
		// containerd's limits: a checkpoint's blobs travel in 1 MiB writes.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20), grpc.MaxCallSendMsgSize(16<<20)),
	)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", e.Address, err)
	}
	c, err := client.NewWithConn(conn, client.WithDefaultNamespace(namespace))
	if err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

// MinMajor is the containerd major version ckpt's migration supports on
// either side (the checkpoint image layout and API of containerd 2.x).
const MinMajor = 2

// supportedVersion says whether a containerd version string ("v2.2.9",
// "2.1.0-rc.1", "1.7.27") is one ckpt migrates to.
func supportedVersion(v string) error {
	s := strings.TrimPrefix(strings.TrimSpace(v), "v")
	major, _, _ := strings.Cut(s, ".")
	n, err := strconv.Atoi(major)
	if err != nil {
		return fmt.Errorf("containerd version %q: cannot tell its major version: %w", v, errdefs.ErrFailedPrecondition)
	}
	if n != MinMajor {
		return fmt.Errorf("containerd %s is not supported (ckpt migrate needs containerd %d.x): %w", v, MinMajor, errdefs.ErrFailedPrecondition)
	}
	return nil
}

// reachError names the likely cause of a failed first call: nothing
// listening, no route or answer, or TLS refused.
func reachError(role, address string, err error) error {
	msg := err.Error()
	var cause string
	switch {
	case strings.Contains(msg, "certificate") || strings.Contains(msg, "tls:") || strings.Contains(msg, "authentication handshake"):
		cause = "TLS refused (do the CA, client certificate and key match the target's tcp_tls_* settings, and does the server certificate name the address?)"
	case strings.Contains(msg, "unknown service"):
		cause = "it answers but does not serve containerd's API (containerd's own [grpc] tcp_address serves only CRI: expose the socket through mutual TLS (stunnel, socat) or SSH instead)"
	case strings.Contains(msg, "connection refused"):
		cause = "nothing listens there (is containerd's [grpc] tcp_address set?)"
	case errors.Is(err, context.DeadlineExceeded) || strings.Contains(msg, "DeadlineExceeded") || strings.Contains(msg, "deadline exceeded") || strings.Contains(msg, "timeout"):
		cause = "no answer in time"
	case strings.Contains(msg, "no such file") || strings.Contains(msg, "permission denied"):
		cause = "cannot open the socket"
	default:
		cause = "unreachable"
	}
	return fmt.Errorf("%s containerd at %s: %s: %v: %w", role, address, cause, err, errdefs.ErrUnavailable)
}
