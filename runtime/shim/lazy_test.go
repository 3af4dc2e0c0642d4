package shim

import (
	"errors"
	"reflect"
	"testing"

	"github.com/containerd/errdefs"
)

func TestLazyRestoreOf(t *testing.T) {
	tests := []struct {
		name        string
		annotations map[string]string
		want        *LazyRestore
		wantErr     bool
	}{
		{name: "none", annotations: nil},
		{name: "other annotations", annotations: map[string]string{"io.ckpt.checkpoint.leave-running": "true"}},
		{name: "lazy from the images", annotations: map[string]string{"io.ckpt.restore.lazy": "true"}, want: &LazyRestore{}},
		{name: "lazy off", annotations: map[string]string{"io.ckpt.restore.lazy": "false"}},
		{name: "from a page server with TLS", annotations: map[string]string{
			"io.ckpt.restore.lazy": "1", "io.ckpt.restore.page-server": "10.0.0.1:27000", "io.ckpt.restore.tls": "true",
			"io.ckpt.restore.tls-cacert": "/ca.pem", "io.ckpt.restore.tls-cert": "/c.pem", "io.ckpt.restore.tls-key": "/k.pem",
		}, want: &LazyRestore{PageServer: "10.0.0.1:27000", TLS: true, TLSCACert: "/ca.pem", TLSCert: "/c.pem", TLSKey: "/k.pem"}},
		{name: "not a bool", annotations: map[string]string{"io.ckpt.restore.lazy": "yes please"}, wantErr: true},
		{name: "unknown key", annotations: map[string]string{"io.ckpt.restore.lazzy": "true"}, wantErr: true},
		{name: "page server without lazy", annotations: map[string]string{"io.ckpt.restore.page-server": "10.0.0.1:1"}, wantErr: true},
	}
	for _, tt := range tests {
		got, err := lazyRestoreOf(tt.annotations)
		if tt.wantErr {
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("%s: error %v, want an invalid argument", tt.name, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: got %+v, want %+v", tt.name, got, tt.want)
		}
	}
}
