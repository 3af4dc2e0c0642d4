package harness

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"

	"github.com/ckpt-dev/ckpt/runtime/netnsthread"
)

// TLSProxy is the target host's mutual-TLS TCP endpoint for containerd's
// API: it forwards each TLS connection to containerd's unix socket, as
// stunnel, `socat OPENSSL-LISTEN,verify=1 UNIX-CONNECT` or an SSH tunnel
// do on a real host. containerd's own `[grpc] tcp_address` cannot serve
// here: containerd 2.x registers only the CRI services on it (services
// with RegisterTCP; cmd/containerd/server/server.go), not content,
// containers, tasks or version.
type TLSProxy struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]bool
}

// NewTLSProxy listens on addr inside the network namespace at netns,
// requiring client certificates signed by p's CA, and forwards to socket.
func NewTLSProxy(netns, addr, socket string, p *PKI) (*TLSProxy, error) {
	cert, err := tls.LoadX509KeyPair(p.ServerCert, p.ServerKey)
	if err != nil {
		return nil, err
	}
	pem, err := os.ReadFile(p.CA)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("no CA certificate in " + p.CA)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool,
		// No ALPN, as stunnel and socat: the client must not need it.
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
	var ln net.Listener
	// The socket belongs to the namespace of the thread that made it.
	if err := netnsthread.Go(netns, func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		return nil, fmt.Errorf("listen on %s in %s: %w", addr, netns, err)
	}
	x := &TLSProxy{ln: tls.NewListener(ln, cfg), conns: map[net.Conn]bool{}}
	x.wg.Add(1)
	go x.serve(socket)
	return x, nil
}

func (x *TLSProxy) serve(socket string) {
	defer x.wg.Done()
	for {
		c, err := x.ln.Accept()
		if err != nil {
			return
		}
		x.wg.Add(1)
		go func() {
			defer x.wg.Done()
			x.forward(c, socket)
		}()
	}
}

func (x *TLSProxy) forward(c net.Conn, socket string) {
	defer c.Close()
	// Handshake first: a refused client sees the TLS alert, not EOF.
	if err := c.(*tls.Conn).Handshake(); err != nil {
		return
	}
	u, err := net.Dial("unix", socket)
	if err != nil {
		return
	}
	defer u.Close()
	if !x.track(c, u) {
		return
	}
	defer x.untrack(c, u)
	done := make(chan struct{}, 2)
	go func() { io.Copy(u, c); done <- struct{}{} }()
	go func() { io.Copy(c, u); done <- struct{}{} }()
	<-done
}

// track records open connections for Close; false once closed.
func (x *TLSProxy) track(cs ...net.Conn) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.conns == nil {
		return false
	}
	for _, c := range cs {
		x.conns[c] = true
	}
	return true
}

func (x *TLSProxy) untrack(cs ...net.Conn) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, c := range cs {
		delete(x.conns, c)
	}
}

// Close stops listening and ends every forwarded connection.
func (x *TLSProxy) Close() error {
	err := x.ln.Close()
	x.mu.Lock()
	for c := range x.conns {
		c.Close()
	}
	x.conns = nil
	x.mu.Unlock()
	x.wg.Wait()
	return err
}
