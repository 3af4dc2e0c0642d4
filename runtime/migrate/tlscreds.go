package migrate

import (
	"context"
	"crypto/tls"
	"errors"
	"net"

	"google.golang.org/grpc/credentials"
)

// tlsCreds is gRPC transport security that needs no ALPN from the server.
// gRPC's own TLS credentials refuse a server that does not select "h2"
// by ALPN, and the usual TLS forwarders in front of a unix socket
// (stunnel, socat) select none. The certificate checks are crypto/tls's:
// the CA, the server's name, and the client certificate it asks for.
type tlsCreds struct{ cfg *tls.Config }

func (c *tlsCreds) ClientHandshake(ctx context.Context, _ string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn := tls.Client(raw, c.cfg.Clone())
	if err := conn.HandshakeContext(ctx); err != nil {
		conn.Close()
		return nil, nil, err
	}
	return conn, credentials.TLSInfo{
		State:          conn.ConnectionState(),
		CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity},
	}, nil
}

func (c *tlsCreds) ServerHandshake(net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("ckpt migrate: client-side TLS only")
}

func (c *tlsCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls"}
}

func (c *tlsCreds) Clone() credentials.TransportCredentials { return &tlsCreds{cfg: c.cfg.Clone()} }

func (c *tlsCreds) OverrideServerName(name string) error {
	c.cfg.ServerName = name
	return nil
}
