package harness

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"path/filepath"
	"time"
)

// PageCert issues, with p's CA, the certificate both ends of a post-copy
// page transfer present (CRIU's --tls-cert on the source's page server and
// on the target's lazy-pages daemon): for ip, the page server's address,
// named by it as CRIU checks, usable as server and client, its key in
// PKCS #8. The files are at the same paths for both hosts, as `ckpt
// migrate --page-tls-*` wants them.
func (p *PKI) PageCert(dir string, ip net.IP) (cert, key string, err error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: ip.String()},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{ip},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &k.PublicKey, p.caKey)
	if err != nil {
		return "", "", err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return "", "", err
	}
	cert, key = filepath.Join(dir, "page-"+ip.String()+".pem"), filepath.Join(dir, "page-"+ip.String()+"-key.pem")
	if err := writePEM(cert, "CERTIFICATE", der); err != nil {
		return "", "", err
	}
	if err := writePEM(key, "PRIVATE KEY", kder); err != nil {
		return "", "", fmt.Errorf("page server key: %w", err)
	}
	return cert, key, nil
}
