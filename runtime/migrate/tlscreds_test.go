package migrate

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestTLSCredsWithoutALPN: the handshake succeeds with a server that
// selects no ALPN protocol (as stunnel or socat), and fails with a server
// certificate the CA did not sign.
func TestTLSCredsWithoutALPN(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	// Empty, not nil: the server selects no protocol, as a forwarder.
	srv.TLS = &tls.Config{NextProtos: []string{}}
	srv.StartTLS()
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	cases := []struct {
		name string
		pool *x509.CertPool
		ok   bool
	}{
		{"trusted", srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs, true},
		{"other CA", x509.NewCertPool(), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			raw, err := net.Dial("tcp", srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			c := &tlsCreds{cfg: &tls.Config{RootCAs: tc.pool, ServerName: "example.com", NextProtos: []string{"h2"}}}
			conn, info, err := c.Clone().ClientHandshake(ctx, "", raw)
			if !tc.ok {
				if err == nil {
					conn.Close()
					t.Fatal("handshake succeeded with a server certificate of another CA")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if info.AuthType() != "tls" {
				t.Errorf("auth type %q", info.AuthType())
			}
		})
	}
}
