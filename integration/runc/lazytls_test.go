package runc_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ckpt-dev/ckpt/runtime/container"
)

// testPKI writes a CA and a certificate for 127.0.0.1 signed by it into
// dir, as CRIU's --tls options want them (PEM), and returns their TLS.
func testPKI(t *testing.T, dir, name string) container.TLS {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name + " CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write := func(file, typ string, b []byte) string {
		p := filepath.Join(dir, name+"-"+file)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return container.TLS{
		Enabled: true, CACert: write("ca.pem", "CERTIFICATE", caDER),
		Cert: write("cert.pem", "CERTIFICATE", der), Key: write("key.pem", "PRIVATE KEY", keyDER),
	}
}

// TestLazyMigrationTLS: post-copy with CRIU's TLS on both ends: the
// checksum matches. With a certificate of another CA at the target, the
// transfer fails with CRIU's reason and the target does not run on; the
// source, aborted as a migration would abort it, runs on whole.
func TestLazyMigrationTLS(t *testing.T) {
	dir := t.TempDir()
	good := testPKI(t, dir, "good")
	other := testPKI(t, dir, "other")

	c, want := newMemCtr(t, lazyMiB)
	lc, r, opts, err := lazyMoveTLS(t, c, time.Minute, good, good)
	if err != nil {
		t.Fatalf("lazy restore over TLS: %v", err)
	}
	t.Cleanup(func() { c.destroy(opts.ID) })
	if err := r.Finish(ctx(t)); err != nil {
		t.Fatalf("lazy restore over TLS: %v", err)
	}
	if err := waitPagesIn(t, r); err != nil {
		t.Fatalf("lazy transfer over TLS: %v", err)
	}
	if _, err := lc.Wait(ctx(t)); err != nil {
		t.Fatalf("source's lazy dump over TLS: %v", err)
	}
	c.id = opts.ID
	if got := c.resum(c.id, 2); got != want {
		t.Fatalf("checksum after migration over TLS %s, want %s", got, want)
	}

	c2, want2 := newMemCtr(t, 16)
	src := c2.id
	lc, r, opts, err = lazyMoveTLS(t, c2, time.Minute, good, other)
	if err == nil {
		err = r.Finish(ctx(t))
		t.Cleanup(func() { c2.destroy(opts.ID) })
		if err == nil {
			// The daemon may meet the page server only once CRIU's restore
			// is done: the refusal then ends the transfer, and ckpt kills
			// the container, which has none of its memory.
			err = waitPagesIn(t, r)
			if _, pid := c2.state(opts.ID); pid > 0 && alive(pid) {
				t.Fatalf("target %d runs on though its page server was refused", pid)
			}
		} else {
			c2.assertGone(opts.ID, nil)
		}
	}
	if err == nil {
		t.Fatal("lazy transfer with a certificate of another CA succeeded")
	}
	t.Logf("refused as it should: %v", err)
	if err := lc.Abort(ctx(t)); err != nil {
		t.Fatalf("abort the source: %v", err)
	}
	if status, _ := c2.state(src); status != "running" {
		t.Fatalf("source is %q after the refused transfer, want running", status)
	}
	if got := c2.resum(src, 2); got != want2 {
		t.Fatalf("source's checksum %s, want %s", got, want2)
	}
}
