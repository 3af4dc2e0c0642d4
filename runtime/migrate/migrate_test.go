package migrate

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

func TestParseEndpoint(t *testing.T) {
	tls := Endpoint{CA: "ca", Cert: "c", Key: "k"}
	cases := []struct {
		name    string
		e       Endpoint
		network string
		addr    string
		host    string
		wantErr string
	}{
		{"tcp", Endpoint{Address: "tcp://10.0.0.2:7443", CA: tls.CA, Cert: tls.Cert, Key: tls.Key}, "tcp", "10.0.0.2:7443", "10.0.0.2", ""},
		{"tcp name", Endpoint{Address: "tcp://node-b:7443", CA: tls.CA, Cert: tls.Cert, Key: tls.Key}, "tcp", "node-b:7443", "node-b", ""},
		{"tcp without TLS", Endpoint{Address: "tcp://10.0.0.2:7443"}, "", "", "", "needs --tls-ca"},
		{"tcp without port", Endpoint{Address: "tcp://10.0.0.2", CA: "a", Cert: "b", Key: "c"}, "", "", "", "want tcp://HOST:PORT"},
		{"tcp bad port", Endpoint{Address: "tcp://10.0.0.2:99999", CA: "a", Cert: "b", Key: "c"}, "", "", "", "port"},
		{"unix URL", Endpoint{Address: "unix:///run/b.sock"}, "unix", "/run/b.sock", "", ""},
		{"socket path", Endpoint{Address: "/run/b.sock"}, "unix", "/run/b.sock", "", ""},
		{"relative", Endpoint{Address: "b.sock"}, "", "", "", "want tcp://HOST:PORT or a unix socket path"},
		{"empty", Endpoint{}, "", "", "", "no address"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ep, err := parseEndpoint(tc.e)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errdefs.IsInvalidArgument(err) {
					t.Fatalf("err %v, want an invalid argument saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ep.network != tc.network || ep.addr != tc.addr || ep.host != tc.host {
				t.Fatalf("got %+v", ep)
			}
		})
	}
}

func TestSupportedVersion(t *testing.T) {
	cases := []struct {
		v  string
		ok bool
	}{
		{"v2.2.9", true}, {"2.1.0-rc.1", true}, {"2.0.0", true},
		{"1.7.27", false}, {"v3.0.0", false}, {"", false}, {"dev", false},
	}
	for _, tc := range cases {
		err := supportedVersion(tc.v)
		if (err == nil) != tc.ok {
			t.Errorf("%q: %v, want ok=%v", tc.v, err, tc.ok)
		}
		if err != nil && !errdefs.IsFailedPrecondition(err) {
			t.Errorf("%q: %v is not a failed precondition", tc.v, err)
		}
	}
}

func TestReachError(t *testing.T) {
	cases := []struct {
		err  error
		want string
	}{
		{errors.New("transport: authentication handshake failed: tls: failed to verify certificate: x509: certificate signed by unknown authority"), "TLS refused"},
		{errors.New("remote error: tls: certificate required"), "TLS refused"},
		{errors.New("dial tcp 10.0.0.2:1: connect: connection refused"), "nothing listens"},
		{errors.New("unknown service containerd.services.version.v1.Version"), "does not serve containerd's API"},
		{context.DeadlineExceeded, "no answer in time"},
		{errors.New("something else"), "unreachable"},
	}
	for _, tc := range cases {
		err := reachError("target", "tcp://b:1", tc.err)
		if !strings.Contains(err.Error(), tc.want) || !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "target containerd at tcp://b:1") {
			t.Errorf("%v -> %v, want %q, unavailable, naming the target", tc.err, err, tc.want)
		}
	}
}

func TestStdio(t *testing.T) {
	cases := []struct {
		s       Stdio
		wantErr bool
	}{
		{"", false}, {"null", false}, {"file:///var/log/c.log", false}, {"fifo:/run/x", false},
		{"file://rel.log", true}, {"fifo:rel", true}, {"tty", true},
	}
	for _, tc := range cases {
		if err := tc.s.validate(); (err != nil) != tc.wantErr {
			t.Errorf("%q: %v, want error %v", tc.s, err, tc.wantErr)
		}
	}
}

// TestStdioFIFOs: fifo:DIR makes the FIFOs a task's stdio opens (no
// stderr with a terminal) and the cleanup removes them; FIFOs already
// there are refused and left alone.
func TestStdioFIFOs(t *testing.T) {
	for _, terminal := range []bool{false, true} {
		dir := t.TempDir()
		creator, rm, err := Stdio("fifo:"+dir).creator("c1", terminal)
		if err != nil {
			t.Fatal(err)
		}
		io, err := creator("c1")
		if err != nil {
			t.Fatal(err)
		}
		cfg := io.Config()
		want := []string{cfg.Stdin, cfg.Stdout}
		if terminal != (cfg.Stderr == "") || cfg.Terminal != terminal {
			t.Fatalf("terminal %v: config %+v", terminal, cfg)
		}
		if !terminal {
			want = append(want, cfg.Stderr)
		}
		for _, p := range want {
			var st unix.Stat_t
			if err := unix.Stat(p, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
				t.Fatalf("%s: not a FIFO (%v)", p, err)
			}
		}
		if _, _, err := Stdio("fifo:"+dir).creator("c1", terminal); err == nil {
			t.Fatal("FIFOs made over existing ones")
		}
		for _, p := range want {
			if _, err := os.Stat(p); err != nil {
				t.Fatalf("a refused creator removed %s", p)
			}
		}
		rm()
		if left, _ := filepath.Glob(filepath.Join(dir, "*")); len(left) != 0 {
			t.Fatalf("left behind: %v", left)
		}
	}
}

// Post-copy needs a page server address the target can dial; the checks
// come before anything is touched.
func TestPostCopyConfig(t *testing.T) {
	for _, tc := range []struct {
		name, server string
		ok           bool
	}{
		{"none", "", false},
		{"every address", "0.0.0.0:27000", false},
		{"every IPv6 address", "[::]:27000", false},
		{"no port", "10.0.0.1", false},
		{"an address of the source", "10.0.0.1:27000", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Config{ID: "c", Namespace: "default", PageServer: tc.server}
			err := c.defaults()
			if tc.ok != (err == nil) {
				t.Fatalf("defaults() = %v, want ok %v", err, tc.ok)
			}
			if err != nil && !errdefs.IsInvalidArgument(err) {
				t.Errorf("%v is not an invalid argument", err)
			}
			if err == nil && c.TransferTimeout != DefaultTransferTimeout {
				t.Errorf("transfer timeout %s", c.TransferTimeout)
			}
		})
	}
	if err := (&Config{ID: "c", Namespace: "default", Copy: true}).defaults(); err != nil {
		t.Errorf("stop-and-copy needs no page server: %v", err)
	}
}
